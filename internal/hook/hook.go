// Package hook passes what package wsmw keeps out of its public API to the
// module's other packages. wsmw stores its relay operations in Relay when it is
// initialized; package relay, which imports wsmw, gives them their types. The
// indirection exists because wsmw cannot import relay, whose signatures name
// wsmw's types; this package imports nothing, so both can import it.
package hook

// Relay holds wsmw's implementation of relay.Ops, set by wsmw's init, which
// runs before any package importing wsmw is initialized.
var Relay any
