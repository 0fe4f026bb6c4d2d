package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/envgate/envgate/netns/netnstest"
)

// TestDashboardInBrowser: headless Chromium logs in to the dashboard on
// admin.listen with the token, sees the running envs in the table, stops
// one with its button (its dev server is gone), and follows another's
// log until a line the dev server prints afterwards shows; then the
// phone layout. Screenshots stay in the test's temp dir.
func TestDashboardInBrowser(t *testing.T) {
	netnstest.RequireRoot(t)
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed, and CI is set: .ci/run must install it (apt-get install chromium)")
		}
		t.Skip("chromium is not installed (apt-get install chromium); skipping the browser test")
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "fedcba9876543210fedcba9876543210"
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	adminAddr := "127.0.0.1:" + strconv.Itoa(netnstest.LoopbackPort(t))
	instance, cfg, addr := testInstance(t, 6, talkTemplate+`admin: {listen: "`+adminAddr+`", token_file: `+tokenFile+"}\n")
	defer netnstest.CheckClean(t, instance)
	g := startServe(t, cfg, addr)
	defer g.stop(t, syscall.SIGTERM)
	stateDir := filepath.Join(filepath.Dir(cfg), "state")
	for _, env := range []string{"alpha", "beta"} {
		if code, _, _ := g.get(t, env+".localhost", "/"); code != 200 {
			t.Fatalf("%s: %d", env, code)
		}
	}
	alphaPid := lsJSON(t, cfg)["alpha"].Pid

	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chrome),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	defer acancel() // before the gateway stops: the log stream would hold its shutdown
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	defer cancel()
	shots := t.TempDir()
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(shots, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", p, len(png))
	}
	within := func(d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, d)
		defer wcancel()
		if err := chromedp.Do(wctx, actions...); err != nil {
			html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("body")))
			t.Fatalf("%s: %v\n%s", what, err, html)
		}
	}

	// The first Run starts the browser: no timeout on it.
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+adminAddr+"/")); err != nil {
		t.Fatal(err)
	}
	// Without the cookie, / sends the browser to the login form.
	within(15*time.Second, "login", chromedp.WaitVisible(chromedp.CSS(`input[name=token]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=token]`), token),
		chromedp.Submit(chromedp.CSS(`input[name=token]`)))
	within(15*time.Second, "the table with both envs running",
		chromedp.WaitVisible(chromedp.CSS(`tr[data-env="alpha"][data-state="ready"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-env="beta"][data-state="ready"]`)))
	counts, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#counts")))
	if err != nil || !strings.Contains(counts, "2 running") {
		t.Errorf("counts %q, %v", counts, err)
	}
	shot("dashboard.png")

	// The stop button stops alpha.
	within(15*time.Second, "alpha stopped by its button",
		chromedp.Click(chromedp.CSS(`tr[data-env="alpha"] button[data-action="stop"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-env="alpha"][data-state="stopped"]`)))
	if !processGone(alphaPid) {
		t.Errorf("alpha's dev server %d still runs after the stop button", alphaPid)
	}
	if e := lsJSON(t, cfg)["alpha"]; e.State != "stopped" {
		t.Errorf("alpha after the stop button: %+v", e)
	}

	// The log tail follows beta's output.
	within(15*time.Second, "beta's log",
		chromedp.Click(chromedp.CSS(`tr[data-env="beta"] button[data-action="logs"]`)),
		chromedp.Poll[chromedp.Void](`document.querySelector("#log").textContent.includes("listening on")`))
	const marker = "a line beta printed while the dashboard watched"
	if err := os.WriteFile(filepath.Join(stateDir, "envs", "beta", "say"), []byte(marker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	within(15*time.Second, "the new line in the log tail",
		chromedp.Poll[chromedp.Void](`document.querySelector("#log").textContent.includes("`+marker+`")`))
	shot("dashboard-logs.png")

	// At a phone's width the table turns into cards (no header row).
	within(15*time.Second, "phone layout", chromedp.EmulateViewport(390, 844))
	display, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.querySelector("thead")).display`))
	if err != nil || display != "none" {
		t.Errorf("thead at phone width: display %q, %v", display, err)
	}
	shot("dashboard-phone.png")
	cancel()
	acancel()
}
