// Package caddytest runs Caddy in the test process: a Caddyfile adapted and
// loaded with caddy.Load, stopped when the test ends. It is apart from testkit
// so that tests that do not need Caddy do not link it.
package caddytest

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile" // the caddyfile adapter
	"github.com/caddyserver/certmagic"
)

// Global is the global options block of the tests' Caddyfiles: no admin
// endpoint, no automatic HTTPS, no saved config, only errors logged.
const Global = `{
	admin off
	auto_https off
	persist_config off
	log {
		level ERROR
	}
}
`

var (
	mu  sync.Mutex
	dir string // where Caddy's files go; "" until Isolate
)

// Isolate puts Caddy's storage and autosave file, which are process-wide, in
// d instead of $HOME, unless they were put elsewhere already. Load puts them in
// a temporary directory (one per process, left to the system's cleaning) unless
// the test binary called Isolate first.
func Isolate(d string) {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		return
	}
	dir = d
	caddy.DefaultStorage = &certmagic.FileStorage{Path: filepath.Join(d, "storage")}
	caddy.ConfigAutosavePath = filepath.Join(d, "autosave.json")
}

// Adapt converts a Caddyfile to Caddy's JSON config with the caddyfile adapter.
func Adapt(caddyfile string) ([]byte, []caddyconfig.Warning, error) {
	return caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
}

// Load adapts caddyfile and runs it in this process, replacing the config
// that runs (which is how Caddy reloads); caddy.Load returns once the listeners
// are bound. Caddy is stopped when the test ends. There is one Caddy per
// process: tests that use it must not run in parallel.
func Load(t testing.TB, caddyfile string) {
	t.Helper()
	cfg, warnings, err := Adapt(caddyfile)
	if err != nil {
		t.Fatalf("adapting the Caddyfile: %v\n%s", err, caddyfile)
	}
	for _, w := range warnings {
		t.Logf("Caddyfile warning: %s", w)
	}
	LoadJSON(t, cfg)
}

// LoadJSON is Load for a JSON config.
func LoadJSON(t testing.TB, cfg []byte) {
	t.Helper()
	mu.Lock()
	d := dir
	mu.Unlock()
	if d == "" {
		var err error
		if d, err = os.MkdirTemp("", "wsgate-caddytest-"); err != nil {
			t.Fatal(err)
		}
		Isolate(d)
	}
	for _, k := range []string{"XDG_DATA_HOME", "XDG_CONFIG_HOME"} {
		t.Setenv(k, d) // what Caddy's modules keep of their own
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading the Caddy config: %v\n%s", err, cfg)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping Caddy: %v", err)
		}
	})
}
