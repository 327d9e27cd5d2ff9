package caddymodule

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/wsgate/wsgate/internal/testkit/caddytest"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// TestMain keeps Caddy's files (storage, autosave) out of $HOME and stops
// the in-process Caddy at the end. Tests that run Caddy must not use
// t.Parallel: there is one Caddy per process.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "caddymodule-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	for _, k := range []string{"HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"} {
		os.Setenv(k, dir)
	}
	caddytest.Isolate(dir)
	defer caddy.Stop()
	return m.Run()
}

// adapt converts a Caddyfile to JSON with the caddyfile adapter.
func adapt(caddyfile string) ([]byte, error) {
	out, _, err := caddytest.Adapt(caddyfile)
	return out, err
}

// findHandlers returns every object with "handler": name in the JSON tree v, in order.
func findHandlers(v any, name string) []map[string]any {
	var out []map[string]any
	switch v := v.(type) {
	case map[string]any:
		if v["handler"] == name {
			out = append(out, v)
		}
		for _, k := range slices.Sorted(maps.Keys(v)) {
			out = append(out, findHandlers(v[k], name)...)
		}
	case []any:
		for _, e := range v {
			out = append(out, findHandlers(e, name)...)
		}
	}
	return out
}

func decode(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("bad JSON %s: %v", b, err)
	}
	return v
}
