package cli

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/toygres/toygres/client"
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
	api, err := client.New(c.BaseURL, client.WithToken(c.Token), client.WithUserAgent("toygres-cli"), client.WithFingerprint(fingerprint))
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "client: "))
	}
	c.API, c.pinSource, c.Fingerprint = api, source, api.Fingerprint()
	return nil
}
