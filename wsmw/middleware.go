package wsmw

import "net/http"

// Handler serves one accepted WebSocket connection. The connection is closed
// (with 1000 if no close was sent yet) when the handler returns.
type Handler func(c *Conn, r *http.Request)

// Middleware returns net/http (and chi) middleware: requests that ask for a
// WebSocket upgrade are handshaken with cfg and handed to h; every other request
// goes to the wrapped handler untouched.
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
			defer c.Close(StatusNormalClosure, "")
			h(c, r)
		})
	}
}
