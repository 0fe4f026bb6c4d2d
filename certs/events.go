package certs

// CertEvent is what happened to a certificate, for metrics.
type CertEvent string

// The certificate events Config.OnEvent is told of: a fixed set, so a
// metric labelled with them stays small.
const (
	// CertObtained: a new certificate for a name (ACME or the internal CA).
	CertObtained CertEvent = "obtained"
	// CertRenewed: a certificate replaced before it expired.
	CertRenewed CertEvent = "renewed"
	// CertFailed: an order or an issuance (new or renewal) failed.
	CertFailed CertEvent = "failed"
)

// event tells Config.OnEvent, if set.
func (c *Config) event(e CertEvent) {
	if c.OnEvent != nil {
		c.OnEvent(e)
	}
}
