package main

import (
	"fmt"
	"os"
	"slices"

	"github.com/wsgate/wsgate/internal/xconnect"
)

// noteHTTP2 tells, when Caddy is about to serve, whether browsers can open
// WebSockets on its HTTP/2 connections: Go's HTTP/2 server advertises
// extended CONNECT (RFC 8441) only when the process starts with
// GODEBUG=http2xconnect=1, which Go reads before main runs. HTTP/3 needs
// nothing.
func noteHTTP2(args []string) {
	if len(args) < 2 || !slices.Contains([]string{"run", "start"}, args[1]) {
		return
	}
	if xconnect.Enabled() {
		fmt.Fprintln(os.Stderr, "wsgate: WebSockets over HTTP/2 are on (GODEBUG=http2xconnect=1)")
		return
	}
	fmt.Fprintln(os.Stderr, "wsgate: WebSockets over HTTP/2 are off; start Caddy with GODEBUG=http2xconnect=1 to turn them on (HTTP/1.1 and HTTP/3 WebSockets work either way)")
}
