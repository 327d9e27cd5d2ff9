package selfsigned

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// TestNew: the certificate verifies for both names against its own pool, and
// its PEM form loads as the same key pair.
func TestNew(t *testing.T) {
	c, err := New("test")
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		opts := x509.VerifyOptions{DNSName: host, Roots: c.Pool}
		if _, err := c.TLS.Leaf.Verify(opts); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := c.TLS.Leaf.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: c.Pool}); err == nil {
		t.Error("the certificate verified for example.com")
	}
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !pair.Leaf.Equal(c.TLS.Leaf) {
		t.Error("the PEM encodes another certificate")
	}
}
