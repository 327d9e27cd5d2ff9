package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	_ "github.com/caddyserver/caddy/v2/modules/standard" // a stock Caddy build: http, reverse_proxy, tls
	_ "github.com/wsgate/wsgate/caddymodule"             // http.handlers.ws
)

// startCaddy runs Caddy in this process (one Caddy per child process, so its
// RSS is its own): one HTTP/1.1 server on a free loopback port whose only
// route hands every request to reverse_proxy (kind caddy) or to wsgate's ws
// handler (kind wsgate-caddy) in front of the upstream. It returns the address.
func startCaddy(cfg childConfig) (string, error) {
	if cfg.workDir == "" {
		return "", errors.New("-work-dir is needed for Caddy's storage")
	}
	// Keep Caddy's storage out of $HOME; with the admin endpoint off and
	// persist false nothing is autosaved, but the path is set all the same.
	dir := filepath.Join(cfg.workDir, fmt.Sprintf("caddy-%d", os.Getpid()))
	caddy.DefaultStorage = &certmagic.FileStorage{Path: filepath.Join(dir, "storage")}
	caddy.ConfigAutosavePath = filepath.Join(dir, "autosave.json")
	addr, err := freeLoopbackAddr()
	if err != nil {
		return "", err
	}
	js, err := caddyConfig(cfg, addr)
	if err != nil {
		return "", err
	}
	if err := caddy.Load(js, true); err != nil {
		return "", fmt.Errorf("loading the Caddy config: %w", err)
	}
	return addr, nil
}

// caddyHandler is the route's handler: Caddy's reverse_proxy (which hijacks
// an upgraded connection and copies bytes both ways with 32 KiB buffers) or
// wsgate's caddymodule.
func caddyHandler(kind, upstream string) map[string]any {
	if kind == "wsgate-caddy" {
		return map[string]any{"handler": "ws", "upstreams": []string{"ws://" + upstream}}
	}
	return map[string]any{"handler": "reverse_proxy", "upstreams": []map[string]string{{"dial": upstream}}}
}

// caddyConfig is the JSON config of the child's Caddy: no admin endpoint, no
// automatic HTTPS, errors only in the log; with a certificate, TLS on the
// client leg from a loaded certificate, HTTP/1.1 only (WebSockets over
// HTTP/2 are a separate feature).
func caddyConfig(cfg childConfig, listen string) ([]byte, error) {
	server := map[string]any{
		"listen":          []string{listen},
		"protocols":       []string{"h1"},
		"automatic_https": map[string]any{"disable": true},
		"routes":          []any{map[string]any{"handle": []any{caddyHandler(cfg.kind, cfg.upstream)}}},
	}
	apps := map[string]any{"http": map[string]any{"servers": map[string]any{"perf": server}}}
	if cfg.certFile != "" {
		server["tls_connection_policies"] = []any{map[string]any{}}
		apps["tls"] = map[string]any{"certificates": map[string]any{
			"load_files": []any{map[string]string{"certificate": cfg.certFile, "key": cfg.keyFile}},
		}}
	}
	return json.Marshal(map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps":    apps,
	})
}

// caddyVersion is the version of Caddy built into this binary.
func caddyVersion() string {
	simple, _ := caddy.Version()
	return simple
}
