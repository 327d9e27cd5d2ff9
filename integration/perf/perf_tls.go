package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/gorilla/websocket"
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
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "wsgate perf"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating the certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	sc := &serverCert{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	if sc.cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, err
	}
	if err := os.WriteFile(sc.certFile, certPEM, 0o644); err != nil {
		return nil, err
	}
	return sc, os.WriteFile(sc.keyFile, keyPEM, 0o600)
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
