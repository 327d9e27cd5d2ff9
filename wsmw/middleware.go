package wsmw

import (
	"context"
	"net/http"

	"go.uber.org/zap"
)

// Handler serves one accepted WebSocket connection. The connection is closed
// (with 1000 if no close was sent yet) when the handler returns.
type Handler func(c *Conn, r *http.Request)

// Middleware returns net/http (and chi) middleware: requests that ask for a
// WebSocket upgrade are handshaken with cfg and handed to h; every other request
// goes to the wrapped handler untouched.
//
// After an HTTP/1.1 upgrade, h runs in a goroutine of its own and the HTTP
// handler returns at once, so net/http releases the buffers it keeps per
// connection (about 8 KiB) instead of holding them for the connection's
// lifetime. On HTTP/2 and HTTP/3 (RFC 8441, RFC 9220) the WebSocket is the
// request's stream, which ends when ServeHTTP returns: h runs in ServeHTTP's
// own goroutine, and ServeHTTP returns when h has returned and the connection
// is closed. Either way h gets a request whose context is not cancelled by
// the end of ServeHTTP or by deadlines of the HTTP request (its values, such
// as a chi request ID, are kept). A panic in h is recovered, logged, and the
// connection closed with 1011.
//
//	r := chi.NewRouter()
//	r.Use(wsmw.Middleware(echo, nil))
func Middleware(h Handler, cfg *ServerConfig) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !IsUpgradeRequest(r) {
				next.ServeHTTP(w, r)
				return
			}
			c, err := Upgrade(w, r, cfg)
			if err != nil {
				return // Upgrade answered the refusal
			}
			r = r.WithContext(context.WithoutCancel(r.Context()))
			if c.onStream() {
				serve(h, c, r, cfg)
				c.endStream()
				return
			}
			go serve(h, c, r, cfg)
		})
	}
}

// serve runs h for one connection and closes it afterwards.
func serve(h Handler, c *Conn, r *http.Request, cfg *ServerConfig) {
	defer func() {
		if v := recover(); v != nil {
			if cfg != nil && cfg.Logger != nil {
				cfg.Logger.Error("websocket handler panicked",
					zap.Any("panic", v), zap.String("remote_addr", r.RemoteAddr), zap.String("uri", r.RequestURI), zap.StackSkip("stack", 2))
			}
			c.Close(StatusInternalError, "internal error")
			return
		}
		c.Close(StatusNormalClosure, "")
	}()
	h(c, r)
}
