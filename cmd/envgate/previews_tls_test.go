package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envgate/envgate/gateway/webhook"
	"github.com/envgate/envgate/netns/netnstest"
)

// TestPreviewTLS (issue 14): under tls: internal, previews.host (the bare
// domain, which is no env's hostname) gets a certificate and takes a
// signed webhook over HTTPS; `envgate destroy` removes the env's worktree
// and its certificate (the next handshake gets a new one).
func TestPreviewTLS(t *testing.T) {
	repo := newGitRepo(t)
	repo.commit("main", map[string]string{"VERSION": "main-v1\n"})
	repo.commit("feature/Login_Page", map[string]string{"VERSION": "login-v1\n"})
	secretFile, _ := previewSecrets(t, "hook-secret", "unused")
	_, cfg, addr, state := previewInstance(t, previewTemplate, repo, "1h", fmt.Sprintf("previews:\n  github: {secret_file: %s}\n", secretFile))
	httpsAddr := fmt.Sprintf("127.0.0.1:%d", netnstest.LoopbackPort(t))
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte(`tls: {mode: "off"}`), []byte("tls: {mode: internal}"), 1)
	b = bytes.Replace(b, []byte(`listen: {http: "`+addr+`"}`), []byte(`listen: {http: "`+addr+`", https: "`+httpsAddr+`"}`), 1)
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	g := startServe(t, cfg, addr)
	t.Cleanup(func() { g.stop(t, syscall.SIGTERM) })
	rootPEM, err := os.ReadFile(filepath.Join(state, "ca", "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatal("no root certificate")
	}
	client := tlsClient(t, httpsAddr, roots)

	// The webhook host: a verified handshake and a delivery taken.
	body := []byte(`{"zen": "Keep it logically awesome."}`)
	req, err := http.NewRequest(http.MethodPost, "https://localhost"+webhook.GitHubPath, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-GitHub-Event", "ping")
	req.Header.Set("X-GitHub-Delivery", "tls-ping")
	req.Header.Set("X-Hub-Signature-256", webhook.Sign([]byte("hook-secret"), body))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("webhook over HTTPS to previews.host: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook over HTTPS: status %d, want 202", resp.StatusCode)
	}
	leafOf := func(name string) *x509.Certificate {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := (&tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: roots}}).DialContext(ctx, "tcp", httpsAddr)
		if err != nil {
			t.Fatalf("handshake for %s: %v", name, err)
		}
		defer c.Close()
		return c.(*tls.Conn).ConnectionState().PeerCertificates[0]
	}
	if host := leafOf("localhost"); host.DNSNames[0] != "localhost" {
		t.Errorf("previews.host's certificate names %v", host.DNSNames)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := (&tls.Dialer{Config: &tls.Config{ServerName: "not-a-branch.localhost", RootCAs: roots}}).DialContext(ctx, "tcp", httpsAddr); err == nil {
		c.Close()
		t.Error("a certificate for not-a-branch.localhost: only the host and the branches' envs get one")
	}

	// An env's certificate goes with it.
	if resp, body := getBody(t, client, "https://feature-login-page.localhost/"); resp.StatusCode != 200 || !strings.Contains(body, "login-v1") {
		t.Fatalf("feature-login-page over HTTPS: %d %q", resp.StatusCode, body)
	}
	first := leafOf("feature-login-page.localhost")
	if again := leafOf("feature-login-page.localhost"); !again.Equal(first) {
		t.Fatal("a second handshake got a new certificate before any destroy: the test cannot tell a removal")
	}
	checkout := filepath.Join(state, "git", "checkouts", "feature-login-page")
	if _, err := os.Stat(checkout); err != nil {
		t.Fatal(err)
	}
	if out := mustCLI(t, cfg, "destroy", "feature-login-page"); !strings.Contains(out, "destroyed") {
		t.Fatalf("envgate destroy: %q", out)
	}
	if _, err := os.Stat(checkout); !os.IsNotExist(err) {
		t.Errorf("worktree after envgate destroy: %v, want it gone", err)
	}
	if second := leafOf("feature-login-page.localhost"); second.Equal(first) {
		t.Error("the same certificate after envgate destroy: the env's certificate was not removed")
	}
}
