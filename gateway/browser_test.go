package gateway_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/envgate/envgate/lifecycle"
	"github.com/envgate/envgate/lifecycle/lifecycletest"
)

// chromium finds Debian's chromium. Outside CI a machine without it skips
// the browser test; in CI (CI set, .ci/run installs the package) its
// absence is a failure.
func chromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed, and CI is set: .ci/run must install it (apt-get install chromium)")
		}
		t.Skip("chromium is not installed (apt-get install chromium); skipping the browser test")
	}
	return path
}

// browser starts a headless Chromium that lives until the test ends.
// Call it after startGateway: cleanups run last-registered first, and the
// browser must be gone before the gateway shuts down, or a connection it
// opened ahead of need holds the server's Shutdown for its whole grace.
func browser(t *testing.T, path string) context.Context {
	t.Helper()
	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1024, 640),
	)
	t.Cleanup(acancel)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancel)
	return ctx
}

// TestBrowserFollowsWaitingPage: a browser that navigates to a cold env
// sees the waiting page, which turns into the app by itself once the env
// is ready. Screenshots of both go to the test's artifact dir (keep them
// with go test -artifacts).
func TestBrowserFollowsWaitingPage(t *testing.T) {
	path := chromium(t)
	g := startGateway(t, gwOptions{Templates: []*lifecycle.Template{
		lifecycletest.Demo(lifecycletest.DemoOptions{BootDelay: 3 * time.Second}),
	}})
	ctx := browser(t, path)
	_, port, _ := net.SplitHostPort(g.Addr)
	url := "http://browse.localhost:" + port + "/"

	// The first Run starts the browser, which lives as long as ctx: no
	// timeout on it.
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		t.Fatal(err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 503 || title != "Starting browse…" {
		t.Fatalf("first navigation: status %d, title %q; want the waiting page", resp.Status, title)
	}
	screenshot(t, ctx, "waiting.png")

	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(wctx, chromedp.WaitVisible(chromedp.CSS("#visits"))); err != nil {
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
		t.Fatalf("the app never replaced the waiting page: %v\n%s", err, html)
	}
	h1, err := chromedp.Run(wctx, chromedp.Text(chromedp.CSS("h1")))
	if err != nil {
		t.Fatal(err)
	}
	loc, err := chromedp.Run(wctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	title, err = chromedp.Run(wctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(h1) != "browse" || loc != url || !strings.HasPrefix(title, "browse") {
		t.Fatalf("final page: h1 %q, location %q, title %q; want the demo app of env browse at %s", h1, loc, title, url)
	}
	screenshot(t, ctx, "app.png")
	if n := g.Net.Creates.Load(); n != 1 {
		t.Errorf("%d namespaces created, want 1: the page must not start the env again", n)
	}
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
