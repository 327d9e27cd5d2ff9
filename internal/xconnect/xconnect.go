// Package xconnect tells whether net/http's HTTP/2 server accepts extended
// CONNECT (RFC 8441), which carries WebSockets over HTTP/2, and lets a test
// binary turn it on.
//
// Go's HTTP/2 server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL only when the
// GODEBUG environment variable contains http2xconnect=1 at process start:
// net/http reads os.Getenv("GODEBUG") once, while it is initialized, before
// main or TestMain runs. Neither os.Setenv nor a //go:debug directive can turn
// it on afterwards (the directive sets the runtime's defaults, which net/http
// does not consult), so a test binary re-executes itself with the variable set.
package xconnect

import (
	"os"
	"strings"
)

// Setting is the GODEBUG setting that turns extended CONNECT on in net/http's HTTP/2 server.
const Setting = "http2xconnect=1"

// enabled is read once, like net/http does, before anything can change the environment.
var enabled = strings.Contains(os.Getenv("GODEBUG"), Setting)

// Enabled reports whether this process started with GODEBUG=http2xconnect=1,
// so that its net/http HTTP/2 servers accept WebSockets (RFC 8441).
func Enabled() bool { return enabled }

// Env returns environ with Setting added to GODEBUG.
func Env(environ []string) []string {
	out := make([]string, 0, len(environ)+1)
	godebug := Setting
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			if v != "" {
				godebug = v + "," + Setting
			}
			continue
		}
		out = append(out, kv)
	}
	return append(out, "GODEBUG="+godebug)
}

// Reexec replaces the running program with itself, same arguments, with
// GODEBUG=http2xconnect=1 added, unless it is on already. A TestMain calls it
// first. It returns only when extended CONNECT is on, or with the error that
// kept the program from being re-executed (then it stays off).
func Reexec() error {
	if enabled {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return reexec(exe, os.Args, Env(os.Environ()))
}
