package loadtest

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"text/template"
)

// ReadHostList reads hostnames from a file, one per line; blank lines and
// lines starting with # are skipped.
func ReadHostList(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loadtest: host list: %w", err)
	}
	defer f.Close()
	var hosts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		hosts = append(hosts, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("loadtest: host list %s: %w", path, err)
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("loadtest: host list %s: no hostnames", path)
	}
	return hosts, nil
}

// EnvName returns the env a hostname addresses: its first DNS label.
func EnvName(host string) string {
	env, _, _ := strings.Cut(host, ".")
	return env
}

// target is everything about one hostname that a request needs, computed
// once so the hot path does not format strings.
type target struct {
	host   string
	env    string
	expect []byte // body substring the routing check wants, if any
	url    *url.URL
}

// hostSet maps host indices from a picker to targets and remembers which
// hosts the generator has already sent a request to.
type hostSet struct {
	fixed []target
	seen  []atomic.Bool // parallel to fixed
	// tmpl makes hosts beyond fixed (never-seen hosts of hotcold); nil with
	// a host list, where indices beyond the hot set wrap over the list's rest.
	tmpl    *template.Template
	hot     int
	scheme  string
	path    *url.URL // path and query of every request
	expectT *template.Template
}

func newHostSet(o *Options) (*hostSet, error) {
	path, err := url.ParseRequestURI(o.Path)
	if err != nil {
		return nil, fmt.Errorf("loadtest: --path: %w", err)
	}
	s := &hostSet{scheme: o.Scheme, path: path, hot: o.dist.hot}
	if !o.NoCheck && o.ExpectBody != "" {
		s.expectT = template.Must(template.New("expect").Option("missingkey=error").Parse(o.ExpectBody))
	}
	var names []string
	if len(o.HostList) > 0 {
		names = o.HostList
	} else {
		s.tmpl = template.Must(template.New("hosts").Option("missingkey=error").Parse(o.HostTemplate))
		n := o.Envs
		if o.dist.kind == distHotCold {
			n = o.dist.hot
		}
		names = make([]string, n)
		for i := range names {
			h, err := renderHost(s.tmpl, i)
			if err != nil {
				return nil, fmt.Errorf("loadtest: --hosts: %w", err)
			}
			names[i] = h
		}
	}
	s.fixed = make([]target, len(names))
	s.seen = make([]atomic.Bool, len(names))
	for i, h := range names {
		t, err := s.newTarget(h)
		if err != nil {
			return nil, err
		}
		s.fixed[i] = t
	}
	return s, nil
}

func renderHost(t *template.Template, i int) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, struct{ I int }{i}); err != nil {
		return "", err
	}
	return b.String(), nil
}

func (s *hostSet) newTarget(host string) (target, error) {
	if err := checkHostname(host); err != nil {
		return target{}, fmt.Errorf("loadtest: hostname %q: %w", host, err)
	}
	u := *s.path
	u.Scheme, u.Host = s.scheme, host
	t := target{host: host, env: EnvName(host), url: &u}
	if s.expectT != nil {
		var b strings.Builder
		if err := s.expectT.Execute(&b, struct{ Env, Host string }{t.env, host}); err != nil {
			return target{}, fmt.Errorf("loadtest: --expect-body: %w", err)
		}
		t.expect = []byte(b.String())
	}
	return t, nil
}

// get returns the target for index i and whether this is the generator's
// first request to it. It is safe for concurrent use.
func (s *hostSet) get(i int) (*target, bool, error) {
	if i < len(s.fixed) {
		return &s.fixed[i], !s.seen[i].Swap(true), nil
	}
	if s.tmpl == nil {
		// A host list has no never-seen hosts to make: reuse its cold part.
		j := s.hot + (i-s.hot)%(len(s.fixed)-s.hot)
		return &s.fixed[j], !s.seen[j].Swap(true), nil
	}
	h, err := renderHost(s.tmpl, i)
	if err != nil {
		return nil, false, fmt.Errorf("loadtest: --hosts: %w", err)
	}
	t, err := s.newTarget(h)
	if err != nil {
		return nil, false, err
	}
	return &t, true, nil
}
