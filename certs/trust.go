package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

const (
	systemCADir     = "/usr/local/share/ca-certificates" // Debian, Ubuntu, Alpine
	installedCAName = "envgate-local-ca.crt"
)

// InstallRoot copies the internal CA's root into the system trust store
// (/usr/local/share/ca-certificates, then update-ca-certificates) and prints
// the commands for the browsers that keep their own store. It needs root.
func InstallRoot(rootPEMPath string, out io.Writer) error {
	return installRoot(rootPEMPath, systemCADir, []string{"update-ca-certificates"}, out)
}

func installRoot(rootPEMPath, destDir string, update []string, out io.Writer) error {
	data, err := os.ReadFile(rootPEMPath)
	if err != nil {
		return fmt.Errorf("certs: trust: %w (has `envgate serve` run once with tls.mode internal?)", err)
	}
	if err := checkRootPEM(data); err != nil {
		return fmt.Errorf("certs: trust: %s: %w", rootPEMPath, err)
	}
	if err := os.MkdirAll(destDir, 0o755); err != nil {
		return fmt.Errorf("certs: trust: %w (run as root)", err)
	}
	dest := filepath.Join(destDir, installedCAName)
	if err := writeFileAtomic(dest, data, 0o644); err != nil {
		return fmt.Errorf("certs: trust: %w (run as root)", err)
	}
	fmt.Fprintf(out, "copied %s to %s\n", rootPEMPath, dest)
	cmd := exec.Command(update[0], update[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("certs: trust: %s: %w (on Fedora or Arch run: trust anchor --store %s)", update[0], err, rootPEMPath)
	}
	PrintBrowserTrust(rootPEMPath, out)
	return nil
}

// PrintBrowserTrust prints how to trust the root in stores that ignore the
// system one: NSS (Firefox, and Chrome/Chromium on Linux), and macOS.
func PrintBrowserTrust(rootPEMPath string, out io.Writer) {
	fmt.Fprintf(out, `
Browsers with their own certificate store (needs certutil: apt-get install libnss3-tools):
  Chrome/Chromium on Linux:
    certutil -d sql:$HOME/.pki/nssdb -A -t "C,," -n "envgate local CA" -i %[1]s
  Firefox (each profile; or set security.enterprise_roots.enabled to true in about:config):
    for d in $HOME/.mozilla/firefox/*/ $HOME/snap/firefox/common/.mozilla/firefox/*/; do
      [ -f "$d/cert9.db" ] && certutil -d "sql:$d" -A -t "C,," -n "envgate local CA" -i %[1]s
    done
  macOS (browsing from a Mac to this gateway; copy the file there first):
    sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain envgate-root.pem
Restart the browser afterwards.
`, rootPEMPath)
}

func checkRootPEM(data []byte) error {
	block, _ := pem.Decode(bytes.TrimSpace(data))
	if block == nil || block.Type != "CERTIFICATE" {
		return fmt.Errorf("no PEM certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	if !c.IsCA {
		return fmt.Errorf("%s is not a CA certificate", c.Subject)
	}
	return nil
}
