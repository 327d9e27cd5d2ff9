package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/http2"

	"github.com/wsgate/wsgate/internal/streamtest"
	"github.com/wsgate/wsgate/wsmw"
)

// TestMain turns on extended CONNECT in net/http's HTTP/2 server for the
// tests on streams (see streamtest.Main).
func TestMain(m *testing.M) { streamtest.Main(m) }

// TestHTTPS: with -tls-cert and -tls-key the demo serves HTTPS with HTTP/2;
// the page, /echo and /ws answer over HTTP/2 (WebSockets as extended CONNECT)
// and HTTP/1.1 alike, the start-up log says WebSockets over HTTP/2 are on, and
// shutdown closes HTTP/2 WebSockets with their codes.
func TestHTTPS(t *testing.T) {
	streamtest.RequireXConnect(t)
	certFile, keyFile, pool := writeCert(t)
	o, err := parseFlags([]string{"-listen", "127.0.0.1:0", "-tls-cert", certFile, "-tls-key", keyFile}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	served := make(chan error, 1)
	go func() { served <- serve(ctx, o, zap.New(core), func(a string) { addrc <- a }) }()
	addr := <-addrc
	if logs.FilterMessage("WebSockets over HTTP/2 are on (GODEBUG=http2xconnect=1)").Len() != 1 {
		t.Errorf("start-up log %v", logs.All())
	}

	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/")
	if err != nil || resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("GET / over HTTP/2: %v %v", resp, err)
	}
	resp.Body.Close()

	codes := make(chan wsmw.StatusCode, 2)
	for _, path := range []string{"/echo", "/ws"} {
		c, _, err := wsmw.Dial(ctx, "wss://"+addr+path, &wsmw.DialConfig{HTTP2: tr})
		if err != nil {
			t.Fatalf("%s over HTTP/2: %v", path, err)
		}
		defer c.CloseNow()
		c.Write(ctx, wsmw.MessageText, []byte("over h2"))
		if _, p, err := c.Read(ctx, nil); err != nil || string(p) != "over h2" {
			t.Fatalf("%s echo over HTTP/2: %q %v", path, p, err)
		}
		go func() {
			_, _, err := c.Read(context.Background(), nil)
			codes <- wsmw.CloseStatus(err)
		}()

		d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
		g, _, err := d.Dial("wss://"+addr+path, nil)
		if err != nil {
			t.Fatalf("%s over HTTP/1.1: %v", path, err)
		}
		g.WriteMessage(websocket.TextMessage, []byte("over h1"))
		if _, p, err := g.ReadMessage(); err != nil || string(p) != "over h1" {
			t.Fatalf("%s echo over HTTP/1.1: %q %v", path, p, err)
		}
		g.Close()
	}

	cancel()
	got := map[wsmw.StatusCode]bool{<-codes: true, <-codes: true}
	if !got[wsmw.StatusServiceRestart] || !got[wsmw.StatusGoingAway] {
		t.Errorf("HTTP/2 WebSockets closed with %v, want 1012 (/ws) and 1001 (/echo)", got)
	}
	select {
	case err := <-served:
		if err != nil && err != http.ErrServerClosed {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not return")
	}
	protos := map[any]int{}
	for _, e := range logs.FilterMessage("session closed").All() {
		protos[e.ContextMap()["client_proto"]]++
	}
	if protos["h2"] != 1 || protos["http/1.1"] != 1 {
		t.Errorf("session log lines by client_proto: %v, want one h2 and one http/1.1", protos)
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key as
// PEM files, and returns them with a pool that trusts the certificate.
func writeCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	cert, pool := streamtest.SelfSigned(t)
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for file, block := range map[string]*pem.Block{
		certFile: {Type: "CERTIFICATE", Bytes: cert.Certificate[0]},
		keyFile:  {Type: "PRIVATE KEY", Bytes: der},
	} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile, pool
}
