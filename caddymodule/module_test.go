package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsmw"
)

func TestValidateRejectsBadConfig(t *testing.T) {
	ms := caddy.Duration(time.Millisecond)
	for _, tc := range []struct {
		name    string
		h       Handler
		wantErr string
	}{
		{"no upstreams", Handler{}, "no upstreams"},
		{"static and dynamic", Handler{Upstreams: []string{"a:1"}, DynamicUpstreamsRaw: json.RawMessage(`{"source":"a"}`)}, "mutually exclusive"},
		{"upstream scheme", Handler{Upstreams: []string{"ftp://a:1"}}, "scheme must be ws or wss"},
		{"upstream without host", Handler{Upstreams: []string{"ws:///x"}}, "has no host"},
		{"upstream unparsable", Handler{Upstreams: []string{"ws://a b:1"}}, "upstream"},
		{"negative retries", Handler{Upstreams: []string{"a:1"}, LoadBalancing: &LoadBalancing{Retries: -1}}, "retries must not be negative"},
		{"negative try duration", Handler{Upstreams: []string{"a:1"}, LoadBalancing: &LoadBalancing{TryDuration: -ms}}, "must not be negative"},
		{"negative health interval", Handler{Upstreams: []string{"a:1"}, HealthChecks: &HealthChecks{Active: &ActiveHealthChecks{Interval: -ms}}}, "health_checks.active.interval must not be negative"},
		{"negative health fails", Handler{Upstreams: []string{"a:1"}, HealthChecks: &HealthChecks{Active: &ActiveHealthChecks{Fails: -1}}}, "health_checks.active.fails must not be negative"},
		{"bad health uri", Handler{Upstreams: []string{"a:1"}, HealthChecks: &HealthChecks{Active: &ActiveHealthChecks{URI: "%zz"}}}, "uri"},
		{"negative fail duration", Handler{Upstreams: []string{"a:1"}, HealthChecks: &HealthChecks{Passive: &PassiveHealthChecks{FailDuration: -ms}}}, "fail_duration must not be negative"},
		{"negative max fails", Handler{Upstreams: []string{"a:1"}, HealthChecks: &HealthChecks{Passive: &PassiveHealthChecks{MaxFails: -1}}}, "max_fails must not be negative"},
		{"client cert without key", Handler{Upstreams: []string{"a:1"}, TLS: &reverseproxy.TLSConfig{ClientCertificateFile: "c.pem"}}, "go together"},
		{"tls except_ports", Handler{Upstreams: []string{"a:1"}, TLS: &reverseproxy.TLSConfig{ExceptPorts: []string{"80"}}}, "except_ports does not apply"},
		{"placeholder in Origin", Handler{Upstreams: []string{"a:1"}, Headers: &Headers{Request: &HeaderOps{Set: http.Header{"Origin": {"{http.request.host}"}}}}}, "Origin cannot take a placeholder"},
		{"placeholder in X-Forwarded-For", Handler{Upstreams: []string{"a:1"}, Headers: &Headers{Request: &HeaderOps{Add: http.Header{"X-Forwarded-For": {"{x}"}}}}}, "X-Forwarded-For cannot take a placeholder"},
		{"set Sec-WebSocket-Protocol", Handler{Upstreams: []string{"a:1"}, Headers: &Headers{Request: &HeaderOps{Add: http.Header{"Sec-WebSocket-Protocol": {"chat"}}}}}, "headers.request cannot set Sec-Websocket-Protocol"},
		{"set Upgrade", Handler{Upstreams: []string{"a:1"}, Headers: &Headers{Request: &HeaderOps{Set: http.Header{"upgrade": {"h2c"}}}}}, "headers.request cannot set Upgrade"},
		{"placeholder in response", Handler{Upstreams: []string{"a:1"}, Headers: &Headers{Response: &HeaderOps{Set: http.Header{"X-A": {"{x}"}}}}}, "placeholders are not supported in response headers"},
		{"negative max_frame_size", Handler{Upstreams: []string{"a:1"}, MaxFrameSize: -1}, "max_frame_size must not be negative"},
		{"negative max_message_size", Handler{Upstreams: []string{"a:1"}, MaxMessageSize: -1}, "max_message_size must not be negative"},
		{"negative max_sessions", Handler{Upstreams: []string{"a:1"}, MaxSessions: -1}, "max_sessions must not be negative"},
		{"unknown allow", Handler{Upstreams: []string{"a:1"}, Allow: "json"}, "allow: unknown message type"},
		{"unknown validate", Handler{Upstreams: []string{"a:1"}, ValidatePayload: []string{"xml"}}, `validate: unknown check "xml"`},
		{"negative rate", Handler{Upstreams: []string{"a:1"}, RateLimit: &RateLimit{MessagesPerSecond: -1}}, "rate_limit: invalid rate limit"},
		{"negative burst", Handler{Upstreams: []string{"a:1"}, RateLimit: &RateLimit{MessagesPerSecond: 1, MessageBurst: -1}}, "rate_limit: invalid rate limit"},
		{"unknown rate mode", Handler{Upstreams: []string{"a:1"}, RateLimit: &RateLimit{Mode: "drop"}}, `rate_limit: unknown mode "drop"`},
		{"negative idle_timeout", Handler{Upstreams: []string{"a:1"}, IdleTimeout: -ms}, "idle_timeout must not be negative"},
		{"negative drain_window", Handler{Upstreams: []string{"a:1"}, DrainWindow: -ms}, "drain_window must not be negative"},
		{"ping_timeout without interval", Handler{Upstreams: []string{"a:1"}, PingTimeout: ms}, "ping_timeout requires ping_interval"},
		{"ping_timeout equal to interval", Handler{Upstreams: []string{"a:1"}, PingInterval: ms, PingTimeout: ms}, "must be shorter than ping_interval"},
		{"drain_code 1005", Handler{Upstreams: []string{"a:1"}, DrainCode: 1005}, "drain_code 1005 cannot be sent"},
		{"drain_code 999", Handler{Upstreams: []string{"a:1"}, DrainCode: 999}, "drain_code 999 cannot be sent"},
		{"drain_code 5000", Handler{Upstreams: []string{"a:1"}, DrainCode: 5000}, "drain_code 5000 cannot be sent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.h.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestValidateAcceptsGoodConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    Handler
	}{
		{"bare host:port", Handler{Upstreams: []string{"127.0.0.1:9001"}}},
		{"URLs", Handler{Upstreams: []string{"ws://a:1/x", "wss://b:2", "http://c:3", "https://d:4"}}},
		{"dynamic", Handler{DynamicUpstreamsRaw: json.RawMessage(`{"source":"a","name":"x","port":"1"}`)}},
		{"drain_code 1001", Handler{Upstreams: []string{"a:1"}, DrainCode: 1001}},
		{"drain_code private", Handler{Upstreams: []string{"a:1"}, DrainCode: 4000}},
		{"ping_timeout below interval", Handler{Upstreams: []string{"a:1"}, PingInterval: caddy.Duration(time.Second), PingTimeout: caddy.Duration(time.Millisecond)}},
		{"placeholder in X-Real-IP", Handler{Upstreams: []string{"a:1"}, Headers: &Headers{Request: &HeaderOps{Set: http.Header{"X-Real-Ip": {"{http.request.remote.host}"}}}}}},
		{"validate utf8 json", Handler{Upstreams: []string{"a:1"}, ValidatePayload: []string{"utf8", "json"}, Allow: "text"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.h.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Every selection policy of reverse_proxy loads into ws (and third-party ones
// would: they are loaded by module name); their own checks apply.
func TestProvisionLoadsCaddySelectionPolicies(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	for _, tc := range []struct {
		policy, wantErr string
	}{
		{`{"policy":"random"}`, ""},
		{`{"policy":"random_choose","choose":3}`, ""},
		{`{"policy":"round_robin"}`, ""},
		{`{"policy":"weighted_round_robin","weights":[1]}`, ""},
		{`{"policy":"least_conn"}`, ""},
		{`{"policy":"first"}`, ""},
		{`{"policy":"ip_hash"}`, ""},
		{`{"policy":"client_ip_hash"}`, ""},
		{`{"policy":"uri_hash"}`, ""},
		{`{"policy":"query","key":"user"}`, ""},
		{`{"policy":"header","field":"X-A"}`, ""},
		{`{"policy":"cookie","name":"lb","secret":"s","max_age":3600000000000}`, ""},
		{`{"policy":"nonexistent"}`, "loading load balancing selection policy"},
		{`{"policy":"random_choose","choose":1}`, "choose"},
		{`{"policy":"header"}`, "field is required"},
		{`{"policy":"query"}`, "key is required"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			h := &Handler{Upstreams: []string{"a:1"}, LoadBalancing: &LoadBalancing{SelectionPolicyRaw: json.RawMessage(tc.policy)}}
			err := h.Provision(ctx)
			defer h.Cleanup()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Provision() = %v, want error %q", err, tc.wantErr)
			}
		})
	}
}

// TestProvisionFailsOnUnreadableFiles checks that errors only found when
// building the proxy (files) surface from Provision and leave nothing pooled.
func TestProvisionFailsOnUnreadableFiles(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o600)
	for _, tc := range []struct {
		name    string
		tls     reverseproxy.TLSConfig
		wantErr string
	}{
		{"missing CA", reverseproxy.TLSConfig{RootCAPEMFiles: []string{filepath.Join(dir, "none.pem")}}, "reading trusted CA"},
		{"CA without certificate", reverseproxy.TLSConfig{RootCAPEMFiles: []string{bad}}, "no certificate in"},
		{"missing client certificate", reverseproxy.TLSConfig{ClientCertificateFile: bad, ClientCertificateKeyFile: bad}, "loading client certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{Upstreams: []string{"a:1"}, TLS: &tc.tls}
			err := h.Provision(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Provision() = %v, want an error containing %q", err, tc.wantErr)
			}
			if err := h.Cleanup(); err != nil {
				t.Fatal(err)
			}
			key, _ := configKey(h)
			if _, ok := pool.References(key); ok {
				t.Fatal("failed provisioning left a pooled proxy")
			}
		})
	}
}

// TestPoolSharesProxyByConfig checks the reload mechanism without a server:
// equal configurations share one proxy, which is destroyed (drained) when the
// last handler using it is cleaned up.
func TestPoolSharesProxyByConfig(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	provision := func(h *Handler) *Handler {
		t.Helper()
		if err := h.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return h
	}
	a1 := provision(&Handler{Upstreams: []string{"127.0.0.1:1"}, MaxMessageSize: 1024})
	a2 := provision(&Handler{Upstreams: []string{"127.0.0.1:1"}, MaxMessageSize: 1024})
	b := provision(&Handler{Upstreams: []string{"127.0.0.1:1"}, MaxMessageSize: 2048})
	if a1.pooled != a2.pooled {
		t.Fatal("equal configurations got different proxies")
	}
	if a1.pooled == b.pooled {
		t.Fatal("different configurations share a proxy")
	}
	if a1.key == b.key {
		t.Fatal("different configurations have the same key")
	}
	if n, _ := pool.References(a1.key); n != 2 {
		t.Fatalf("references = %d, want 2", n)
	}
	if a1.pooled.owner() != a2 {
		t.Fatal("the newest handler is not the owner")
	}
	pa := a1.pooled
	a1.Cleanup()
	if n, ok := pool.References(a2.key); !ok || n != 1 {
		t.Fatalf("after one cleanup: references = %d, %v; want 1", n, ok)
	}
	a2.Cleanup()
	b.Cleanup()
	if _, ok := pool.References(a2.key); ok {
		t.Fatal("proxy still pooled after its last handler was cleaned up")
	}
	if pa.owner() != a2 {
		t.Fatal("a retired proxy should log through its last owner")
	}
	waitDrains(context.Background())
}

// TestConfigKeyIncludesDynamicSource checks that the key is computed before
// the dynamic source is loaded (which clears the raw JSON).
func TestConfigKeyIncludesDynamicSource(t *testing.T) {
	a := &Handler{DynamicUpstreamsRaw: json.RawMessage(`{"source":"a","name":"x","port":"1"}`)}
	b := &Handler{DynamicUpstreamsRaw: json.RawMessage(`{"source":"a","name":"y","port":"1"}`)}
	ka, _ := configKey(a)
	kb, _ := configKey(b)
	if ka == kb {
		t.Fatal("different dynamic sources have the same key")
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Cleanup()
	if a.key != ka {
		t.Fatal("key not computed from the raw config")
	}
	if a.dynamic == nil {
		t.Fatal("dynamic source not loaded")
	}
	if err := a.Validate(); err != nil {
		t.Fatalf("Validate after Provision: %v", err)
	}
}

// TestJSONConfig checks the JSON shapes documented for the handler, durations
// given as strings included, and their translation into proxy.Config.
func TestJSONConfig(t *testing.T) {
	const raw = `{
		"upstreams": ["ws://127.0.0.1:9001/echo", "127.0.0.1:9002"],
		"load_balancing": {"selection_policy": {"policy": "round_robin"}, "retries": 2, "try_duration": "1s", "try_interval": "50ms"},
		"health_checks": {
			"active": {"uri": "/health", "interval": "10s", "timeout": "2s", "passes": 2, "fails": 3, "headers": {"X-Probe": ["1"]}},
			"passive": {"fail_duration": "30s"}
		},
		"tls": {"server_name": "up.internal", "insecure_skip_verify": true},
		"headers": {
			"request": {"set": {"X-Static": ["yes"], "X-Real-Ip": ["{http.request.remote.host}"]}, "add": {"X-Tag": ["a"]}, "delete": ["Cookie"]},
			"response": {"set": {"X-Frame-Options": ["DENY"]}}
		},
		"origins": ["https://*.example.com"],
		"subprotocols": ["chat"],
		"max_frame_size": 16384,
		"max_message_size": 65536,
		"allow": "text",
		"validate": ["utf8", "json"],
		"rate_limit": {"messages_per_second": 20, "bytes_per_second": 65536, "message_burst": 40, "mode": "close"},
		"dial_timeout": "3s",
		"idle_timeout": "5m",
		"max_lifetime": "1h",
		"write_timeout": "10s",
		"close_timeout": "2s",
		"ping_interval": "30s",
		"ping_timeout": "10s",
		"max_sessions": 100,
		"drain_code": 1001,
		"drain_window": "10s"
	}`
	var h Handler
	if err := json.Unmarshal([]byte(raw), &h); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := h.Provision(ctx); err != nil { // loads the selection policy and the TLS config
		t.Fatal(err)
	}
	defer h.Cleanup()
	cfg, err := h.proxyConfig()
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	check("Upstreams", cfg.Upstreams, []string{"ws://127.0.0.1:9001/echo", "127.0.0.1:9002"}) // the proxy makes it wss:// (tls is set)
	check("UpstreamTLS set", cfg.UpstreamTLS != nil, true)
	cb, ok := cfg.Balancer.(*caddyBalancer)
	if !ok {
		t.Fatalf("Balancer is %T, want Caddy's round_robin module", cfg.Balancer)
	}
	check("Balancer", reflect.TypeOf(cb.sel), reflect.TypeOf(new(reverseproxy.RoundRobinSelection)))
	check("Retries", cfg.Retries, 2)
	check("TryDuration", cfg.TryDuration, time.Second)
	check("TryInterval", cfg.TryInterval, 50*time.Millisecond)
	check("ActiveHealth.Path", cfg.ActiveHealth.Path, "/health")
	check("ActiveHealth.Interval", cfg.ActiveHealth.Interval, 10*time.Second)
	check("ActiveHealth.Timeout", cfg.ActiveHealth.Timeout, 2*time.Second)
	check("ActiveHealth.Passes", cfg.ActiveHealth.Passes, 2)
	check("ActiveHealth.Fails", cfg.ActiveHealth.Fails, 3)
	check("ActiveHealth.Header", cfg.ActiveHealth.Header, http.Header{"X-Probe": {"1"}})
	check("PassiveHealth", cfg.PassiveHealth, proxy.PassiveHealth{MaxFails: 1, FailDuration: 30 * time.Second})
	check("UpstreamTLS.ServerName", cfg.UpstreamTLS.ServerName, "up.internal")
	check("UpstreamTLS.InsecureSkipVerify", cfg.UpstreamTLS.InsecureSkipVerify, true)
	check("HeaderUp", cfg.HeaderUp, proxy.HeaderOps{Set: http.Header{"X-Static": {"yes"}, "X-Real-Ip": {"{http.request.remote.host}"}}, Add: http.Header{"X-Tag": {"a"}}, Delete: []string{"Cookie"}})
	check("Replace set for placeholders", cfg.Replace != nil, true)
	check("HeaderDown", cfg.HeaderDown, proxy.HeaderOps{Set: http.Header{"X-Frame-Options": {"DENY"}}})
	check("Origins", cfg.Origins, []string{"https://*.example.com"})
	check("Subprotocols", cfg.Subprotocols, []string{"chat"})
	check("MaxFrameSize", cfg.MaxFrameSize, int64(16384))
	check("MaxMessageSize", cfg.MaxMessageSize, int64(65536))
	check("DialTimeout", cfg.DialTimeout, 3*time.Second)
	check("IdleTimeout", cfg.IdleTimeout, 5*time.Minute)
	check("MaxLifetime", cfg.MaxLifetime, time.Hour)
	check("WriteTimeout", cfg.WriteTimeout, 10*time.Second)
	check("CloseTimeout", cfg.CloseTimeout, 2*time.Second)
	check("PingInterval", cfg.PingInterval, 30*time.Second)
	check("PingTimeout", cfg.PingTimeout, 10*time.Second)
	check("MaxSessions", cfg.MaxSessions, 100)
	check("DrainCode", cfg.DrainCode, wsmw.StatusGoingAway)
	if len(cfg.Inspectors) != 3 {
		t.Fatalf("inspectors %#v, want allow, validate json and rate limit", cfg.Inspectors)
	}
	check("Inspectors[0]", cfg.Inspectors[0], proxy.Inspector(proxy.AllowTypes{Only: wsmw.OpText}))
	check("Inspectors[1]", cfg.Inspectors[1], proxy.Inspector(proxy.ValidateJSON{}))
	rl, ok := cfg.Inspectors[2].(*proxy.RateLimit)
	if !ok {
		t.Fatalf("Inspectors[2] is %T, want *proxy.RateLimit", cfg.Inspectors[2])
	}
	check("RateLimit", rl.Config(), proxy.RateLimitConfig{Messages: 20, MessageBurst: 40, Bytes: 65536, ByteBurst: 65536, Mode: proxy.RateLimitClose})
}
