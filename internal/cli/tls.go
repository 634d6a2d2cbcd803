package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/toygres/toygres/internal/tlscert"
)

// CertificateError means the server's TLS certificate was refused: it is
// not the pinned one, or (nothing pinned) the system does not trust it.
// Its message is one line that says what to do.
type CertificateError struct {
	URL string
	// Pinned is the expected fingerprint ("" when nothing was pinned).
	Pinned string
	// Got is the fingerprint of the certificate the server presented.
	Got string
	// PinSource says where the pin came from (for the message).
	PinSource string
	Err       error
}

func (e *CertificateError) Error() string {
	if e.Pinned != "" {
		src := ""
		if e.PinSource != "" {
			src = " (from " + e.PinSource + ")"
		}
		return fmt.Sprintf("refusing the server at %s: its TLS certificate is %s, not the pinned %s%s; "+
			"if the server's certificate was replaced on purpose, check the new fingerprint (printed by 'toygres server start', "+
			"in its credentials.json) and run 'toygres login --url %s --fingerprint %s', otherwise someone may be intercepting the connection",
			e.URL, e.Got, e.Pinned, src, e.URL, orPlaceholder(e.Got))
	}
	return fmt.Sprintf("refusing the server at %s: its TLS certificate is not trusted by this machine (%v); "+
		"if it is the server's self-signed certificate, compare its fingerprint %s with the one 'toygres server start' printed "+
		"and pin it: 'toygres login --url %s --fingerprint %s' (or --fingerprint on any command)",
		e.URL, shortTLSErr(e.Err), orPlaceholder(e.Got), e.URL, orPlaceholder(e.Got))
}

func (e *CertificateError) Unwrap() error { return e.Err }

func orPlaceholder(fp string) string {
	if fp == "" {
		return "SHA256:…"
	}
	return fp
}

func shortTLSErr(err error) string {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	switch {
	case errors.As(err, &ua):
		return "signed by an unknown authority"
	case errors.As(err, &he):
		return he.Error()
	}
	return shortNetErr(err)
}

// Pin makes the client accept exactly the server certificate with this
// fingerprint (see tlscert.PinnedConfig); source says where it came from.
// An empty fingerprint leaves the system's CA verification.
func (c *Client) Pin(fingerprint, source string) error {
	if fingerprint == "" {
		return nil
	}
	cfg, err := tlscert.PinnedConfig(fingerprint)
	if err != nil {
		return err
	}
	c.pinSource = source
	c.Fingerprint, _ = tlscert.ParseFingerprint(fingerprint)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = cfg
	timeout := 60 * time.Second
	if c.HTTP != nil && c.HTTP.Timeout > 0 {
		timeout = c.HTTP.Timeout
	}
	c.HTTP = &http.Client{Timeout: timeout, Transport: t}
	return nil
}

// certificateError turns a TLS verification failure into a
// CertificateError (nil for other errors).
func (c *Client) certificateError(err error) error {
	var mm *tlscert.MismatchError
	if errors.As(err, &mm) {
		return &CertificateError{URL: c.BaseURL, Pinned: mm.Want, Got: mm.Got, PinSource: c.pinSource, Err: err}
	}
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		got := ""
		if len(cve.UnverifiedCertificates) > 0 {
			got = tlscert.Fingerprint(cve.UnverifiedCertificates[0].Raw)
		}
		return &CertificateError{URL: c.BaseURL, Got: got, Err: err}
	}
	if strings.HasPrefix(c.BaseURL, "https://") && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Errorf("the server at %s speaks plain HTTP, not HTTPS: use an http:// URL", c.BaseURL)
	}
	return nil
}
