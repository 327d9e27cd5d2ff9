package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/selfsigned"
)

// serverCert is the self-signed certificate every variant's client leg
// presents under -tls: made in memory, and written to files for the proxies
// that load it themselves (the Go children, Caddy, nginx).
type serverCert struct {
	cert              tls.Certificate
	certFile, keyFile string
}

// newServerCert makes an ECDSA P-256 certificate for 127.0.0.1 and localhost,
// valid for a day, and writes it as PEM into dir.
func newServerCert(dir string) (*serverCert, error) {
	c, err := selfsigned.New("wsgate perf")
	if err != nil {
		return nil, err
	}
	sc := &serverCert{cert: c.TLS, certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	if err := os.WriteFile(sc.certFile, c.CertPEM, 0o644); err != nil {
		return nil, err
	}
	return sc, os.WriteFile(sc.keyFile, c.KeyPEM, 0o600)
}

// tlsSummary describes the TLS session of c ("" if c is plain): version,
// cipher suite and key exchange, as negotiated with the proxy.
func tlsSummary(c *websocket.Conn) string {
	tc, ok := c.NetConn().(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	return fmt.Sprintf("%s %s %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID)
}
