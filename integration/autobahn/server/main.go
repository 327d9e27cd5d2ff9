// Command server is the echo server for the Autobahn TestSuite in
// fuzzingclient mode: a wsmw.Middleware handler that echoes every message as
// it came (text as text, binary as binary), negotiating permessage-deflate
// unless -deflate=false, so that the suite's cases 12.* and 13.* run too. With
// -proxy it also serves the wsgate proxy in front of that echo server (with
// compression passed through end to end), so that the suite can be pointed at
// the proxy as well; see ../README.md.
//
//	go run ./integration/autobahn/server -listen 127.0.0.1:9002 -proxy 127.0.0.1:9003
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsmw"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9002", "address of the echo server")
	proxyAddr := flag.String("proxy", "", "if set, also serve the proxy (to the echo server) on this address")
	maxMessage := flag.Int64("max-message", 64<<20, "largest frame and message accepted, in bytes")
	deflate := flag.Bool("deflate", true, "negotiate permessage-deflate (echo: every message compressed; proxy: passthrough)")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("echo server on ws://%s", ln.Addr())
	errc := make(chan error, 2)
	go func() { errc <- serve(ln, echoHandler(*maxMessage, *deflate)) }()

	if *proxyAddr != "" {
		h, err := proxyHandler("ws://"+ln.Addr().String(), *maxMessage, *deflate)
		if err != nil {
			log.Fatal(err)
		}
		pln, err := net.Listen("tcp", *proxyAddr)
		if err != nil {
			log.Fatal(err)
		}
		log.Printf("proxy on ws://%s", pln.Addr())
		go func() { errc <- serve(pln, h) }()
	}
	log.Fatal(<-errc)
}

func serve(ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// echoHandler echoes each message with the message API; limits are
// maxMessage. With deflate, permessage-deflate is accepted as offered and
// every echo is compressed.
func echoHandler(maxMessage int64, deflate bool) http.Handler {
	cfg := &wsmw.ServerConfig{MaxFrameSize: maxMessage, MaxMessageSize: maxMessage}
	if deflate {
		cfg.Compression = &wsmw.CompressionOptions{Threshold: -1}
	}
	echo := func(c *wsmw.Conn, _ *http.Request) {
		var buf []byte
		for {
			op, p, err := c.Read(context.Background(), buf[:0])
			if err != nil {
				return // a close was answered, or the connection failed with its code
			}
			buf = p
			if err := c.Write(context.Background(), op, p); err != nil {
				return
			}
		}
	}
	return wsmw.Middleware(echo, cfg)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "WebSocket echo server: connect with a WebSocket client", http.StatusUpgradeRequired)
	}))
}

// proxyHandler is the proxy to upstream with the same limits; with deflate,
// permessage-deflate is negotiated end to end (passthrough).
func proxyHandler(upstream string, maxMessage int64, deflate bool) (http.Handler, error) {
	cfg := proxy.Config{
		Upstreams:      []string{upstream},
		MaxFrameSize:   maxMessage,
		MaxMessageSize: maxMessage,
	}
	if deflate {
		cfg.Compression = proxy.CompressionPassthrough
	}
	p, err := proxy.New(cfg)
	if err != nil {
		return nil, err
	}
	return p.Middleware(http.NotFoundHandler()), nil
}
