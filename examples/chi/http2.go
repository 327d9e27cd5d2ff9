package main

import (
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/internal/xconnect"
)

// logHTTP2 says whether browsers can open WebSockets on the HTTPS server's
// HTTP/2 connections: net/http advertises extended CONNECT (RFC 8441) only
// when the process started with GODEBUG=http2xconnect=1, which Go reads before
// main runs. Without it, browsers fall back to an HTTP/1.1 connection of its
// own for each WebSocket.
func logHTTP2(log *zap.Logger) {
	if xconnect.Enabled() {
		log.Info("WebSockets over HTTP/2 are on (GODEBUG=http2xconnect=1)")
		return
	}
	log.Info("WebSockets over HTTP/2 are off: start with GODEBUG=http2xconnect=1 to carry them on HTTP/2 connections (browsers use HTTP/1.1 for them meanwhile)")
}
