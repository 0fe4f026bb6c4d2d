package devserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/devserver"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
	"github.com/envgate/envgate/netns"
	"github.com/envgate/envgate/netns/netnstest"
)

// probeVar makes the test binary a dev server that reports what it can
// reach (probeServer).
const probeVar = "ENVGATE_TEST_PROBE"

// probeReport is what a probe dev server saw.
type probeReport struct {
	UID, GID   int
	Pid        int               // its own, in its pid namespace
	Procs      []int             // pids in its /proc
	Errs       map[string]string // probe -> error ("" for success)
	NoFile     uint64
	NProc      uint64
	TmpEntries []string
	Read       string // what read=F read
}

// probeServer serves /probe?dir=D&pid=P&write=F&read=R: it lists D,
// reads /proc/P/environ, sends P signal 0, writes F, reads R, and
// reports.
func probeServer() {
	http.HandleFunc("/probe", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		rep := probeReport{UID: os.Getuid(), GID: os.Getgid(), Pid: os.Getpid(), Errs: map[string]string{}}
		try := func(name string, err error) {
			rep.Errs[name] = ""
			if err != nil {
				rep.Errs[name] = err.Error()
			}
		}
		if d := q.Get("dir"); d != "" {
			_, err := os.ReadDir(d)
			try("readdir", err)
		}
		if p := q.Get("pid"); p != "" {
			_, err := os.ReadFile("/proc/" + p + "/environ")
			try("environ", err)
			pid, _ := strconv.Atoi(p)
			try("kill", syscall.Kill(pid, 0))
		}
		if f := q.Get("write"); f != "" {
			try("write", os.WriteFile(f, []byte("x"), 0o600))
		}
		if f := q.Get("read"); f != "" {
			b, err := os.ReadFile(f)
			rep.Read = string(b)
			try("read", err)
		}
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			if n, err := strconv.Atoi(e.Name()); err == nil {
				rep.Procs = append(rep.Procs, n)
			}
		}
		tmp, _ := os.ReadDir("/tmp")
		for _, e := range tmp {
			rep.TmpEntries = append(rep.TmpEntries, e.Name())
		}
		var l syscall.Rlimit
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
		rep.NoFile = l.Max
		syscall.Getrlimit(6 /* RLIMIT_NPROC */, &l)
		rep.NProc = l.Max
		json.NewEncoder(w).Encode(rep)
	})
	err := http.ListenAndServe(":"+os.Getenv("PORT"), nil)
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// probeBinary is the test binary where any user can run it.
func probeBinary(t *testing.T) string { return probeBinaryB(t) }

func probeBinaryB(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	openPathB(t, dir)
	bin := filepath.Join(dir, "probe")
	if err := os.Link(exe, bin); err != nil {
		b, err := os.ReadFile(exe)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

// openPath lets any user reach d (t.TempDir makes 0700 dirs).
func openPath(t *testing.T, d string) { openPathB(t, d) }

func openPathB(t testing.TB, d string) {
	for ; strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func probe(t *testing.T, l *lifecycle.Lease, query string) probeReport {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + l.Addr.String() + "/probe?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var rep probeReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("probe: %v: %s", err, b)
	}
	return rep
}

// envProcs returns an isolated env's init (the trampoline, root) and dev
// server (its own uid), by host pid.
func envProcs(t *testing.T, f *fixture, name string) (init, server int) {
	t.Helper()
	pids, err := netns.PidsIn(filepath.Join(netns.RunDir, f.NSM.Prefix()+"-"+name))
	if err != nil || len(pids) != 2 {
		t.Fatalf("processes in env %s: %v %v, want the init and the dev server", name, pids, err)
	}
	for _, p := range pids {
		if procStatus(t, p)["NSpid"] == strconv.Itoa(p)+"\t1" {
			init = p
		} else {
			server = p
		}
	}
	if init == 0 || server == 0 {
		t.Fatalf("env %s: no pid 1 among %v", name, pids)
	}
	return init, server
}

// TestIsolatedEnvsCannotReachEachOther is issue 13's test 4: two envs of
// a template with dynamic users, isolated. Env A's dev server, as its own
// uid, cannot read env B's data dir or /proc/<B>/environ, cannot signal
// B, sees only its own processes and has a /tmp of its own; the same
// probes on its own things succeed. Each sees its own /etc/resolv.conf
// (a file of its own, Config.Mounts), read-only, and nothing of it on
// its /tmp. Then a stop ends both of A's processes through SIGTERM, well
// within the grace period.
//
// It runs with each trampoline (initVariants): the Go path and envgate-init's
// C fast path must isolate alike.
func TestIsolatedEnvsCannotReachEachOther(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, v := range initVariants {
		t.Run(v.name, func(t *testing.T) { isolatedEnvsCannotReachEachOther(t, v) })
	}
}

// checkInitPath fails t unless env's init is single-threaded exactly when
// v is the C fast path (the Go runtime has threads of its own): so the
// variant ran the path it names.
func checkInitPath(t *testing.T, v initVariant, init int) {
	t.Helper()
	thr := procStatus(t, init)["Threads"]
	if v.fast && thr != "1" {
		t.Errorf("%s: the init has %s threads, want 1 (the C fast path, no Go runtime)", v.name, thr)
	}
	if !v.fast && thr == "1" {
		t.Errorf("%s: the init has 1 thread, want the Go path's runtime threads", v.name)
	}
}

func isolatedEnvsCannotReachEachOther(t *testing.T, v initVariant) {
	tp := &lifecycle.Template{
		Name:      "probe",
		Command:   []string{probeBinary(t)},
		Env:       map[string]string{probeVar: "1"},
		Port:      3000,
		Ready:     lifecycle.Probe{Timeout: 20 * time.Second},
		User:      lifecycle.DynamicUser,
		StopGrace: 20 * time.Second,
	}
	if err := tp.Prepare(); err != nil {
		t.Fatal(err)
	}
	parent := cgroupParent(t)
	resolvConf := func(env string) string { return "# " + env + "\nnameserver 192.0.2.53\n" }
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{tp}}, devserver.Config{Isolate: true, CgroupParent: parent,
		InitPath: v.path(t), Users: devserver.UIDRange{First: 3_000_000_000, Last: 3_000_000_099},
		Mounts: func(env string, _ lifecycle.Sandbox) []devserver.BindMount {
			return []devserver.BindMount{{Target: "/etc/resolv.conf", Content: resolvConf(env)}}
		}})
	openPath(t, f.DataDir)

	lb := acquire(t, f.M, "bravo")
	defer lb.Release()
	la := acquire(t, f.M, "alpha")
	defer la.Release()
	initA, serverA := envProcs(t, f, "alpha")
	initB, serverB := envProcs(t, f, "bravo")
	checkInitPath(t, v, initA)

	// Who runs what, seen from the host.
	uids := map[string]string{}
	for name, p := range map[string]int{"alpha": serverA, "bravo": serverB} {
		st := procStatus(t, p)
		uid := strings.Fields(st["Uid"])[0]
		if n, _ := strconv.ParseUint(uid, 10, 32); n < 3_000_000_000 || n > 3_000_000_099 {
			t.Errorf("%s's dev server runs as uid %s, want one of the range", name, uid)
		}
		if st["NoNewPrivs"] != "1" || st["CapEff"] != "0000000000000000" || st["Groups"] != "" {
			t.Errorf("%s's dev server: NoNewPrivs %s CapEff %s Groups %q", name, st["NoNewPrivs"], st["CapEff"], st["Groups"])
		}
		uids[name] = uid
		fi, err := os.Stat(filepath.Join(f.DataDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if s := fi.Sys().(*syscall.Stat_t); strconv.Itoa(int(s.Uid)) != uid || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s's data dir: owner %d mode %v, want %s and 0700", name, s.Uid, fi.Mode().Perm(), uid)
		}
		if cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p)); !strings.Contains(string(cg), parent+"/"+name) {
			t.Errorf("%s's dev server's cgroups:\n%s\nwant %s/%s", name, cg, parent, name)
		}
	}
	if uids["alpha"] == uids["bravo"] {
		t.Fatalf("both envs run as uid %s", uids["alpha"])
	}

	// The default, unless the gateway's own hard limit is lower and it may
	// not raise it (no CAP_SYS_RESOURCE).
	var gw syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &gw)
	wantNoFile := min(uint64(lifecycle.DefaultOpenFiles), gw.Max)
	if hasCap(t, 24) { // CAP_SYS_RESOURCE
		wantNoFile = lifecycle.DefaultOpenFiles
	}

	// A on B: B's data dir, B's dev server and init by their host pids.
	bDir := filepath.Join(f.DataDir, "bravo")
	for _, target := range []int{serverB, initB} {
		rep := probe(t, la, fmt.Sprintf("dir=%s&pid=%d&write=/tmp/alpha-was-here", bDir, target))
		if !strings.Contains(rep.Errs["readdir"], "permission denied") {
			t.Errorf("alpha listing bravo's data dir: %q, want permission denied", rep.Errs["readdir"])
		}
		if rep.Errs["environ"] == "" {
			t.Errorf("alpha read /proc/%d/environ (bravo's)", target)
		}
		if rep.Errs["kill"] == "" {
			t.Errorf("alpha could signal %d (bravo's)", target)
		}
		if rep.Errs["write"] != "" {
			t.Errorf("alpha cannot write its /tmp: %s", rep.Errs["write"])
		}
		if !slices.Equal(rep.Procs, []int{1, rep.Pid}) {
			t.Errorf("alpha's /proc lists %v, want [1 %d] (its init and itself)", rep.Procs, rep.Pid)
		}
		if strconv.Itoa(rep.UID) != uids["alpha"] || rep.GID != rep.UID {
			t.Errorf("alpha's probe runs as %d:%d, want %s:%s", rep.UID, rep.GID, uids["alpha"], uids["alpha"])
		}
		if rep.NoFile != wantNoFile || rep.NProc != lifecycle.DefaultProcesses {
			t.Errorf("alpha's rlimits: nofile %d nproc %d, want %d and %d", rep.NoFile, rep.NProc, wantNoFile, lifecycle.DefaultProcesses)
		}
	}
	for _, p := range []int{serverB, initB} {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); err != nil {
			t.Fatalf("bravo's process %d is gone, so the probes above prove nothing: %v", p, err)
		}
	}
	// The same probes on A's own things succeed: they can tell.
	own := probe(t, la, "")
	own = probe(t, la, fmt.Sprintf("dir=%s&pid=%d", filepath.Join(f.DataDir, "alpha"), own.Pid))
	for _, k := range []string{"readdir", "environ", "kill"} {
		if own.Errs[k] != "" {
			t.Errorf("alpha on its own %s: %s", k, own.Errs[k])
		}
	}
	// Each its own resolv.conf, read-only; not on /tmp.
	for name, l := range map[string]*lifecycle.Lease{"alpha": la, "bravo": lb} {
		rep := probe(t, l, "read=/etc/resolv.conf&write=/etc/resolv.conf")
		if rep.Errs["read"] != "" || rep.Read != resolvConf(name) {
			t.Errorf("%s's /etc/resolv.conf: %q (%s), want %q", name, rep.Read, rep.Errs["read"], resolvConf(name))
		}
		if !strings.Contains(rep.Errs["write"], "read-only") {
			t.Errorf("%s writing its /etc/resolv.conf: %q, want read-only", name, rep.Errs["write"])
		}
		for _, e := range rep.TmpEntries {
			if strings.HasPrefix(e, ".envgate") {
				t.Errorf("%s's /tmp holds %s", name, e)
			}
		}
	}
	if b, _ := os.ReadFile("/etc/resolv.conf"); strings.Contains(string(b), "192.0.2.53") {
		t.Errorf("the host's /etc/resolv.conf is an env's:\n%s", b)
	}
	// /tmp is A's own: B does not see A's file, nor does the host.
	if rep := probe(t, lb, ""); slices.Contains(rep.TmpEntries, "alpha-was-here") {
		t.Errorf("bravo sees alpha's /tmp file: %v", rep.TmpEntries)
	}
	if _, err := os.Stat("/tmp/alpha-was-here"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("alpha's /tmp file on the host: %v", err)
	}

	// Stop: SIGTERM to the group reaches the dev server (pid 2 of its
	// namespace) and the init, which exits with it; nothing is left.
	la.Release()
	begin := time.Now()
	if !f.M.Stop("alpha", "test") {
		t.Fatal("alpha was not running")
	}
	if took := time.Since(begin); took > tp.StopGrace/2 {
		t.Errorf("stop took %v: SIGTERM did not end the env (grace %v)", took, tp.StopGrace)
	}
	for _, p := range []int{initA, serverA} {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("alpha's process %d after stop: %v", p, err)
		}
	}
	// Its uid is its data dir's: the next start gets the same one.
	la2 := acquire(t, f.M, "alpha")
	defer la2.Release()
	if rep := probe(t, la2, ""); strconv.Itoa(rep.UID) != uids["alpha"] {
		t.Errorf("alpha restarted as uid %d, want %s again", rep.UID, uids["alpha"])
	}
}

// hasCap reports whether the test process has capability bit c.
func hasCap(t *testing.T, c uint) bool {
	v, err := strconv.ParseUint(procStatus(t, os.Getpid())["CapEff"], 16, 64)
	return err == nil && v&(1<<c) != 0
}

// BenchmarkIsolatedStart measures what isolation adds to a cold start:
// the same demo dev server started in the host's pid and mount namespaces
// as the gateway's user, isolated as root (the trampoline as init, its
// mounts), and isolated as a dynamic user (plus the uid and the chown).
// It reports the cold start's p50 and p99 and, isolated, the init's
// resident memory (RssAnon, what the env's init costs beyond the shared
// binary pages). The isolated modes run with the trampoline as this test
// binary (what a gateway without envgate-init beside it does) and, as
// "-init", as cmd/envgate-init.
func BenchmarkIsolatedStart(b *testing.B) {
	netnstest.RequireRoot(b)
	initBin := buildInit(b)
	for _, mode := range []string{"host", "isolated-root", "isolated-dynamic", "isolated-root-init", "isolated-dynamic-init"} {
		b.Run(mode, func(b *testing.B) {
			ds := devserver.Config{Isolate: mode != "host"}
			if strings.HasSuffix(mode, "-init") {
				ds.InitPath = initBin
			}
			tp := lifecycletest.Demo(lifecycletest.DemoOptions{})
			if strings.HasPrefix(mode, "isolated-dynamic") {
				tp.Command = []string{probeBinaryB(b)}
				tp.User = lifecycle.DynamicUser
				if err := tp.Prepare(); err != nil {
					b.Fatal(err)
				}
			}
			f := benchFixture(b, lifecycle.Config{Templates: []*lifecycle.Template{tp}}, ds)
			openPathB(b, f.DataDir)
			var cold []time.Duration
			var rss []int
			ctx := context.Background()
			b.ResetTimer()
			for i := range b.N {
				name := fmt.Sprintf("cold%d", i)
				l, err := f.M.Acquire(ctx, name)
				if err != nil {
					b.Fatal(err)
				}
				cold = append(cold, l.Cold)
				l.Release()
				b.StopTimer()
				if mode != "host" {
					pids, _ := netns.PidsIn(filepath.Join(netns.RunDir, f.NSM.Prefix()+"-"+name))
					for _, p := range pids {
						if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p)); err == nil && strings.Contains(string(st), "NSpid:\t"+strconv.Itoa(p)+"\t1\n") {
							var kb int
							for _, line := range strings.Split(string(st), "\n") {
								if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
									kb, _ = strconv.Atoi(strings.Fields(v)[0])
								}
							}
							rss = append(rss, kb)
						}
					}
				}
				f.M.Stop(name, "bench")
				b.StartTimer()
			}
			slices.Sort(cold)
			slices.Sort(rss)
			b.ReportMetric(float64(lifecycletest.Percentile(cold, 50).Microseconds())/1000, "cold-p50-ms")
			b.ReportMetric(float64(lifecycletest.Percentile(cold, 99).Microseconds())/1000, "cold-p99-ms")
			if len(rss) > 0 {
				b.ReportMetric(float64(rss[len(rss)/2]), "init-rssanon-KiB")
			}
		})
	}
}

// A dev server that leaves the init's process group (setsid) misses the
// gateway's group signal; the init passes its own on, so a stop is still
// a SIGTERM the dev server handles, not a SIGKILL after the grace period.
func TestIsolatedInitForwardsSignals(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, v := range initVariants {
		t.Run(v.name, func(t *testing.T) { isolatedInitForwardsSignals(t, v) })
	}
}

func isolatedInitForwardsSignals(t *testing.T, v initVariant) {
	tp := lifecycletest.Shell(`exec setsid "$DEMO"`, 20*time.Second)
	tp.StopGrace = 20 * time.Second
	f := newFixture(t, lifecycle.Config{Templates: []*lifecycle.Template{tp}}, devserver.Config{Isolate: true, InitPath: v.path(t)})
	l := acquire(t, f.M, "loner")
	l.Release()
	init, server := envProcs(t, f, "loner")
	checkInitPath(t, v, init)
	if pg, err := syscall.Getpgid(server); err != nil || pg == init {
		t.Fatalf("dev server's process group %d (%v): want one of its own, not the init's %d", pg, err, init)
	}
	begin := time.Now()
	f.M.Stop("loner", "test")
	if took := time.Since(begin); took > tp.StopGrace/2 {
		t.Errorf("stop took %v: the dev server did not get SIGTERM (grace %v)", took, tp.StopGrace)
	}
	p, err := f.M.Progress("loner", 20)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(p.Tail, "\n"), "shutting down") {
		t.Errorf("the demo did not shut down on SIGTERM; output:\n%s", strings.Join(p.Tail, "\n"))
	}
}
