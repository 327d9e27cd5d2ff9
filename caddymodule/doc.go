// Package caddymodule plugs the proxy package into Caddy v2 as the HTTP
// handler http.handlers.ws and the Caddyfile directive ws. Build Caddy with it
// using xcaddy (xcaddy build --with github.com/wsgate/wsgate/caddymodule) or
// the two-line main in examples/caddy.
//
// # Model
//
// The handler is middleware: a request that is not a WebSocket upgrade
// (no "Upgrade: websocket") goes to the next handler, so ws can share a route
// with file_server, respond or reverse_proxy. An upgrade is proxied: the
// upstream is dialed first (its refusal, or 502/503/504, reaches the client as
// an HTTP response), then both legs are upgraded and every frame is forwarded
// with the limits and inspectors of the route. The Caddyfile directive is
// ordered just before respond, so it runs ahead of respond, reverse_proxy,
// php_fastcgi and file_server, and after abort and error.
//
// # Sessions survive reloads
//
// A Caddy handler instance lives for one configuration; a WebSocket session
// lives as long as its client. The sessions therefore belong to a
// *proxy.Proxy kept outside the handler, in a package-level caddy.UsagePool
// keyed by the SHA-256 of the handler's JSON. Provision takes a reference,
// building the proxy if there is none; Cleanup drops it. Caddy provisions a
// new configuration before it cleans up the old one, so:
//
//   - a reload that leaves a ws handler's configuration unchanged (same JSON)
//     finds the same proxy: its sessions carry on untouched;
//   - a reload that changes or removes it drops the last reference to the old
//     proxy, which then drains: each session is closed with drain_code (1012
//     by default) on both legs, the closes spread evenly over drain_window.
//     New sessions go to the new proxy at once.
//
// The drain runs in the background, so a reload is not held up; it is bounded
// by drain_window + close_timeout (+1s), after which sessions still open are
// left to their close handshakes (each itself bounded by close_timeout). When
// Caddy exits gracefully, the exit waits for drains in progress, within the
// same bound.
//
// Only the handler's JSON counts, not its route or matchers: identical ws
// handlers in two routes share one proxy (and its max_sessions), and a
// changed file (a trusted CA) under an unchanged configuration is not
// reloaded. The logger and the dynamic upstream source
// are taken from the newest configuration using the proxy, so they follow
// reloads. Metrics are one set for all routes, registered on each
// configuration's registry under the caddy_ws namespace
// (caddy_ws_sessions_active, caddy_ws_closes_total, ...), and keep counting
// across reloads.
//
// # Load balancing and health
//
// lb_policy names mean what they mean for reverse_proxy: random (default),
// random_choose [n], round_robin, least_conn, first, ip_hash, client_ip_hash
// (the client IP after trusted_proxies), header <field>, cookie [<name>]. The
// policies are this package's own (proxy.ParseBalancer), not Caddy's
// http.reverse_proxy.selection_policies modules, which depend on counters of
// reverse_proxy's unexported host state: connection counts (least_conn counts
// open sessions) and health state are kept per proxy. The cookie policy only
// reads the cookie; the 101 belongs to the upstream, which must set it.
//
// Active health checks (health_uri, health_interval, ...) perform a real
// WebSocket handshake with each upstream; passive ones (fail_duration,
// max_fails; max_fails defaults to 1) count failed dials and handshakes.
// Dynamic upstreams (dynamic a|srv|multi, reverse_proxy's upstream sources) are
// looked up per session; each dial address host:port is dialed with ws://, or
// wss:// when tls (or any tls_* option) is set.
//
// # Messages
//
// max_frame_size and max_message_size bound both directions: a frame or
// message over them closes the session, with 1009 to its sender. allow
// text|binary closes with 1003 on the other kind. validate json closes with
// 1007 on a text message that is not JSON (such messages are reassembled
// before forwarding, within max_message_size); validate utf8 is accepted for
// clarity but always on: the WebSocket layer fails invalid UTF-8 in text
// messages with 1007 regardless. rate_limit gives each session and direction
// token buckets for messages and bytes per second, delaying (back-pressure)
// or closing with 1008.
//
// # Headers
//
// header_up and header_down take [+|-]<field> [<value>]: set, add (+) or
// delete (-). Request (header_up) values may use placeholders such as
// {remote_host}, except for Host, Origin, X-Forwarded-* and handshake
// headers, which the proxy sets itself or checks; response (header_down)
// values are static. Hop-by-hop and Sec-WebSocket-* headers never pass.
//
// HTTP/2 WebSockets (RFC 8441 extended CONNECT) are not handled: Go's HTTP/2
// server does not enable them by default, and such requests go to next.
package caddymodule
