package main

import (
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/envgate/envgate/certs"
)

// secretKey is one secret the config may hold inline or name a file for.
type secretKey struct {
	field     string  // dotted path of the inline key, e.g. tls.wildcard.tsig_secret
	value     *string // the inline value, filled from the file when one is named
	fileField string  // the *_file key's path
	file      string  // the *_file key's value
}

// secretKeys lists the secrets the config holds or names files for.
func (c *Config) secretKeys() []secretKey {
	var keys []secretKey
	if w := c.TLS.Wildcard; w != nil {
		keys = append(keys, secretKey{"tls.wildcard.tsig_secret", &w.TSIGSecret, "tls.wildcard.tsig_secret_file", w.TSIGSecretFile})
	}
	if e := c.TLS.EAB; e != nil {
		keys = append(keys, secretKey{"tls.eab.mac_key", &e.MACKey, "tls.eab.mac_key_file", e.MACKeyFile})
	}
	return keys
}

// loadSecretFiles reads each *_file secret into its inline key, so that
// the rest of the config sees one value whichever way it was given.
func (c *Config) loadSecretFiles() []*FieldError {
	var errs []*FieldError
	for _, k := range c.secretKeys() {
		if k.file == "" {
			continue
		}
		if *k.value != "" {
			errs = append(errs, c.errAt(k.fileField, "set %s or %s, not both", lastKey(k.field), lastKey(k.fileField)))
			continue
		}
		b, err := os.ReadFile(k.file)
		if err != nil {
			errs = append(errs, c.errAt(k.fileField, "%v", err))
			continue
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			errs = append(errs, c.errAt(k.fileField, "%s is empty", k.file))
			continue
		}
		*k.value = v
	}
	return errs
}

func lastKey(path string) string { return path[strings.LastIndexByte(path, '.')+1:] }

// secretWarnings are what `config --check` says about secrets other users
// of the machine can read: a config file that holds one inline, and a
// *_file (or the files mode's private key) that group or others may read.
// An env's dev server runs as another user on the same machine: it must
// not be able to read the TSIG key that can rewrite the zone.
func (c *Config) secretWarnings() []string {
	var warns []string
	readable := func(path string) (fs.FileMode, bool) {
		st, err := os.Stat(path)
		if err != nil {
			return 0, false
		}
		return st.Mode().Perm(), st.Mode().Perm()&0o044 != 0
	}
	var inline []string
	for _, k := range c.secretKeys() {
		if k.file == "" && *k.value != "" {
			inline = append(inline, k.field)
		} else if mode, ok := readable(k.file); k.file != "" && ok {
			warns = append(warns, c.errAt(k.fileField, "%s is readable by group or others (mode %#o): chmod 600 it", k.file, mode).Error())
		}
	}
	if c.TLS.KeyFile != "" && c.TLS.Mode == string(certs.ModeFiles) {
		if mode, ok := readable(c.TLS.KeyFile); ok {
			warns = append(warns, c.errAt("tls.key_file", "%s is readable by group or others (mode %#o): chmod 600 it", c.TLS.KeyFile, mode).Error())
		}
	}
	if len(inline) > 0 {
		if mode, ok := readable(c.file); ok {
			warns = append(warns, fmt.Sprintf("%s holds secrets (%s) and is readable by group or others (mode %#o): chmod 600 it, or move them to the *_file keys (%s_file)",
				c.file, strings.Join(inline, ", "), mode, strings.Join(inline, "_file, ")))
		}
	}
	return warns
}

// noTemplatesError is the error for a config without templates on a domain
// other than localhost. On localhost the embedded demo template fills in
// (setDefaults); elsewhere that would put a demo server running as root on
// a public name, so the config must say what to run.
func (c *Config) noTemplatesError() *FieldError {
	e := c.errAt("templates", "no templates: envs under %s need at least one (the built-in demo, which runs as root, is only used for localhost domains); see `envgate config` for an example", strings.Join(c.Domains, ", "))
	if e.Line == 0 {
		e.Line = lineOf(c.root, "domains")
	}
	return e
}
