package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeServerVar makes the test binary act as a dev server for TestRunBoot.
const fakeServerVar = "BENCHTOOL_FAKE_SERVER"

// fakeHTTPVar makes the test binary an HTTP dev server on the port it
// names, for TestRunFloor.
const fakeHTTPVar = "BENCHTOOL_FAKE_HTTP"

func TestMain(m *testing.M) {
	if os.Getenv(fakeServerVar) != "" {
		fakeServer()
	}
	if p := os.Getenv(fakeHTTPVar); p != "" {
		fakeHTTP(p)
	}
	os.Exit(m.Run())
}

// fakeHTTP listens on port p, says so as the demo server does and answers
// every request with 200, until killed (or its parent dies).
func fakeHTTP(p string) {
	unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	ln, err := net.Listen("tcp", ":"+p)
	if err != nil {
		fmt.Println("fake:", err)
		os.Exit(1)
	}
	fmt.Println("fake: env=x listening on", ln.Addr())
	http.Serve(ln, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	os.Exit(1)
}

// fakeServer prints the line the boot loop times and then runs until the
// loop kills its process group, or until the test binary that started it
// dies, whichever comes first.
func fakeServer() {
	unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	if os.Getppid() == 1 { // the parent died before the line above
		os.Exit(1)
	}
	// With a signal handler installed, the runtime does not take the
	// wait below for a deadlock.
	term := make(chan os.Signal, 1)
	signal.Notify(term, unix.SIGTERM)
	fmt.Println("fake: env=x listening on 127.0.0.1:1")
	<-term
	os.Exit(0)
}

// envServer answers like the demo server behind the gateway: it names
// the env of the Host, and marks hosts starting with "cold" as cold starts.
func envServer(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		env := envOf(r.Host)
		if strings.HasPrefix(env, "cold") {
			w.Header().Set("Envgate-Cold-Start", "5ms")
		}
		if env == "wrong" {
			env = "other"
		}
		w.Header().Set("X-Envgate-Env", env)
		fmt.Fprintln(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestRunHerd(t *testing.T) {
	addr := envServer(t)
	res, err := runHerd([]string{"-addr", addr, "-hosts", "h{{.I}}.localhost", "-envs", "3", "-n", "30"})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 30 || res.Errors != 0 || res.Status["200"] != 30 || res.Latency.N != 30 || res.AllAnsweredMS <= 0 {
		t.Errorf("herd = %+v, want 30 ok answers", res)
	}

	res, err = runHerd([]string{"-addr", addr, "-hosts", "wrong.localhost", "-n", "4"})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Status["misroute"] != 4 || res.FirstError == "" {
		t.Errorf("herd to a misrouting server = %+v, want 4 misroutes", res)
	}
}

func TestRunCold(t *testing.T) {
	addr := envServer(t)
	tests := []struct {
		hosts       string
		cold, other int
	}{
		{"cold{{.I}}.localhost", 5, 0},
		{"warm{{.I}}.localhost", 0, 5},
	}
	for _, tt := range tests {
		res, err := runCold([]string{"-addr", addr, "-hosts", tt.hosts, "-n", "5"})
		if err != nil {
			t.Fatal(err)
		}
		if res.TTFB.N != 5 || res.ColdHeader.N != tt.cold || res.NotCold != tt.other || res.Errors != 0 {
			t.Errorf("%s: %+v, want 5 answers, %d cold, %d not", tt.hosts, res, tt.cold, tt.other)
		}
		if tt.cold > 0 && res.ColdHeader.P50 != 5 {
			t.Errorf("%s: cold header p50 = %v, want 5", tt.hosts, res.ColdHeader.P50)
		}
	}
}

func TestRunBoot(t *testing.T) {
	t.Setenv(fakeServerVar, "1")
	res, err := runBoot([]string{"-n", "3", "--", os.Args[0]})
	if err != nil {
		t.Fatal(err)
	}
	if res.Boot.N != 3 || res.Boot.Min <= 0 {
		t.Errorf("boot = %+v, want 3 timed boots", res.Boot)
	}

	t.Setenv(fakeServerVar, "")
	if _, err := runBoot([]string{"-n", "1", "--", "/bin/true"}); err == nil {
		t.Error("a command that never listens was timed as booted")
	}
}

func TestRunGrow(t *testing.T) {
	addr := envServer(t)
	res, err := runGrow([]string{"-addr", addr, "-hosts", "g{{.I}}.localhost", "-envs", "40", "-concurrency", "4"})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 40 || res.Errors != 0 || res.Status["200"] != 40 || res.Latency.N != 40 || res.StartsPerSecond <= 0 {
		t.Errorf("grow = %+v, want 40 ok answers and a rate", res)
	}

	res, err = runGrow([]string{"-addr", addr, "-hosts", "wrong.localhost", "-envs", "3"})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Status["misroute"] != 3 || res.FirstError == "" {
		t.Errorf("grow to a misrouting server = %+v, want 3 misroutes", res)
	}
}

func TestRunPlot(t *testing.T) {
	dir := t.TempDir()
	in, out := dir+"/scale.csv", dir+"/scale.svg"
	// Rows out of order and an extra column: the plot sorts by live envs
	// and reads columns by name.
	csv := "live_envs,extra,cold_p50_ms,cold_p99_ms,rss_mib,threads\n" +
		"1000,x,55,90,541,1067\n0,x,30,45,40,12\n500,x,42,70,280,540\n"
	if err := os.WriteFile(in, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := runPlot([]string{"-in", in, "-out", out, "-title", "test"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 3 {
		t.Errorf("rows = %d, want 3", res.Rows)
	}
	svg, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "live envs", "cold-start TTFB (ms)", "gateway RSS (MiB)", "p99"} {
		if !strings.Contains(string(svg), want) {
			t.Errorf("SVG lacks %q", want)
		}
	}

	if err := os.WriteFile(in, []byte("live_envs,cold_p50_ms\n0,30\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runPlot([]string{"-in", in, "-out", out}); err == nil || !strings.Contains(err.Error(), "cold_p99_ms") {
		t.Errorf("plot of a CSV without cold_p99_ms: err = %v, want one naming the column", err)
	}
}

// TestRunFloor starts a few envs of bare kernel operations (root: network
// namespaces) and checks the rates, and that nothing is left after.
func TestRunFloor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	t.Setenv(fakeHTTPVar, "3000")
	res, err := runFloor([]string{"-steps", "2,4", "-concurrency", "2", "-pool", "10.217.255.0/28", "-prefix", "bft", "--", os.Args[0]})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || len(res.Steps) != 2 {
		t.Fatalf("floor = %+v, want 2 steps without errors", res)
	}
	for i, s := range res.Steps {
		if s.Live != 2*(i+1) || s.Grown != 2 || s.Latency.N != 2 || s.StartsPerSecond <= 0 {
			t.Errorf("step %d = %+v, want 2 envs grown to %d, timed", i, s, 2*(i+1))
		}
	}
	links, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Name, "bft-") {
			t.Errorf("link %s left after the run", l.Name)
		}
	}
	if out, _ := exec.Command("pgrep", "-f", "-c", "--", "^"+os.Args[0]+"$").Output(); strings.TrimSpace(string(out)) != "0" {
		t.Errorf("%s servers left after the run", strings.TrimSpace(string(out)))
	}
	res, err = runFloor([]string{"-steps", "1", "-pool", "10.217.255.0/28", "-prefix", "bft", "-timeout", "5s", "--", "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 1 || res.FirstError == "" {
		t.Errorf("floor of a server that never listens = %+v, want its start failed", res)
	}
}
