// Package testkit is what the module's tests share: a raw frame codec on top of
// wsmw's header codec, a raw WebSocket endpoint and a raw upstream server (for
// peers that break the protocol on purpose), echo upstreams on gorilla,
// coder and wsmw, and small waiting and networking helpers.
//
// It is internal to the module and imported only by tests. wsmw's own
// in-package tests cannot import it (it imports wsmw); they keep their helpers
// in wsmw/testutil_test.go. The in-process Caddy loader is in the sub-package
// caddytest, so that tests that do not need Caddy do not link it.
package testkit
