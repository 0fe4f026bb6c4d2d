package loadtest

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	base := func() Options { return Options{Addr: "127.0.0.1:8080", Rate: 10} }
	for _, tc := range []struct {
		name    string
		mod     func(*Options)
		wantErr string // substring naming the flag; "" means valid
	}{
		{"minimal open loop", func(*Options) {}, ""},
		{"minimal closed loop", func(o *Options) { o.Rate, o.Concurrency = 0, 4 }, ""},
		{"no addr", func(o *Options) { o.Addr = "" }, "--addr is required"},
		{"addr without port", func(o *Options) { o.Addr = "localhost" }, "--addr"},
		{"neither mode", func(o *Options) { o.Rate = 0 }, "--rate R (open loop) or --concurrency C"},
		{"both modes", func(o *Options) { o.Concurrency = 2 }, "exclude each other"},
		{"negative rate", func(o *Options) { o.Rate = -1 }, "--rate"},
		{"duration and requests", func(o *Options) { o.Duration, o.Requests = time.Second, 5 }, "--duration and --requests"},
		{"negative warmup", func(o *Options) { o.Warmup = -time.Second }, "--warmup"},
		{"bad scheme", func(o *Options) { o.Scheme = "ftp" }, "--scheme"},
		{"ca over http", func(o *Options) { o.CAFile = "ca.pem" }, "--scheme https"},
		{"ca and insecure", func(o *Options) { o.Scheme, o.CAFile, o.Insecure = "https", "ca.pem", true }, "--insecure and --ca"},
		{"https ok", func(o *Options) { o.Scheme, o.Insecure, o.HTTP2 = "https", true, true }, ""},
		{"bad dist", func(o *Options) { o.Dist = "pareto" }, "--dist"},
		{"zipf s too small", func(o *Options) { o.Dist = "zipf:1" }, "S > 1"},
		{"zipf ok", func(o *Options) { o.Dist = "zipf:1.2" }, ""},
		{"hotcold p too big", func(o *Options) { o.Dist = "hotcold:5,1" }, "0 <= P < 1"},
		{"hotcold no hot", func(o *Options) { o.Dist = "hotcold:0,0.1" }, "H >= 1"},
		{"hotcold list too short", func(o *Options) { o.Dist, o.HostList = "hotcold:2,0.1", []string{"a.x", "b.x"} }, "more than H=2"},
		{"bad template", func(o *Options) { o.HostTemplate = "e{{.I}.x" }, "--hosts"},
		{"template unknown field", func(o *Options) { o.HostTemplate = "e{{.N}}.x" }, "--hosts"},
		{"template without index", func(o *Options) { o.HostTemplate = "one.example.com" }, "has no {{.I}}"},
		{"template without index, one env", func(o *Options) { o.HostTemplate, o.Envs = "one.example.com", 1 }, ""},
		{"template makes a URL", func(o *Options) { o.HostTemplate = "http://e{{.I}}.x" }, "--hosts"},
		{"bad list entry", func(o *Options) { o.HostList = []string{"a.x", "b.x:80"} }, "--host-list entry 2"},
		{"bad path", func(o *Options) { o.Path = "api" }, "--path"},
		{"path with query", func(o *Options) { o.Path = "/api?x=1" }, ""},
		{"host header", func(o *Options) { o.Header = http.Header{"Host": {"x"}} }, "--header Host"},
		{"bad expect header", func(o *Options) { o.ExpectHeader = "X Env" }, "--expect-header"},
		{"bad expect body", func(o *Options) { o.ExpectBody = "{{.Env" }, "--expect-body"},
		{"negative max inflight", func(o *Options) { o.MaxInflight = -1 }, "--max-inflight"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base()
			tc.mod(&o)
			err := o.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v, want nil", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("Validate: nil, want an error containing %q", tc.wantErr)
			case err != nil && (!strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidOptions)):
				t.Fatalf("Validate: %v, want ErrInvalidOptions containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestValidateDefaults(t *testing.T) {
	o := Options{Addr: "127.0.0.1:1", Concurrency: 1}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Options{
		Addr: "127.0.0.1:1", Concurrency: 1, Scheme: "http", HostTemplate: DefaultHostTemplate, Envs: DefaultEnvs,
		Dist: "uniform", Seed: 1, Duration: DefaultDuration, MaxInflight: DefaultMaxInflight, Timeout: DefaultTimeout,
		Method: "GET", Path: "/", ExpectHeader: DefaultExpectHeader,
	}
	if o.Scheme != want.Scheme || o.HostTemplate != want.HostTemplate || o.Envs != want.Envs || o.Dist != want.Dist ||
		o.Seed != want.Seed || o.Duration != want.Duration || o.MaxInflight != want.MaxInflight || o.Timeout != want.Timeout ||
		o.Method != want.Method || o.Path != want.Path || o.ExpectHeader != want.ExpectHeader {
		t.Errorf("defaults:\n got %+v\nwant %+v", o, want)
	}
}

func TestParseHeaders(t *testing.T) {
	h, err := ParseHeaders([]string{"X-A: 1", "x-a:2", "Authorization: Bearer t:k"})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Values("X-A"); len(got) != 2 || got[0] != "1" || got[1] != "2" || h.Get("Authorization") != "Bearer t:k" {
		t.Errorf("ParseHeaders = %v", h)
	}
	for _, bad := range []string{"no colon", ": empty name", "Bad Name: v"} {
		if _, err := ParseHeaders([]string{bad}); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("ParseHeaders(%q): %v, want ErrInvalidOptions", bad, err)
		}
	}
}
