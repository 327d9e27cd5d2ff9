package caddymodule

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/wsgate/wsgate/proxy"
)

// caddyfileCases map each Caddyfile option to the handler JSON it adapts to.
// Each body is the directive as written in a site block; want is the whole
// handler object except "handler".
var caddyfileCases = []struct {
	name, directive, want string
}{
	{"upstreams as arguments", `ws 127.0.0.1:9001 ws://h:9002/echo`,
		`{"upstreams":["127.0.0.1:9001","ws://h:9002/echo"]}`},
	{"to", "ws 127.0.0.1:9001 {\n to wss://a:1 b:2\n to c:3\n}",
		`{"upstreams":["127.0.0.1:9001","wss://a:1","b:2","c:3"]}`},
	{"dynamic a", "ws {\n dynamic a example.com 9000\n}",
		`{"dynamic_upstreams":{"source":"a","name":"example.com","port":"9000"}}`},
	{"dynamic srv", "ws {\n dynamic srv _ws._tcp.example.com {\n refresh 10s\n }\n}",
		`{"dynamic_upstreams":{"source":"srv","name":"_ws._tcp.example.com","refresh":10000000000}}`},
	{"dynamic multi", "ws {\n dynamic multi {\n a a.example.com 9000\n a b.example.com 9000\n }\n}",
		`{"dynamic_upstreams":{"source":"multi","sources":[{"source":"a","name":"a.example.com","port":"9000"},{"source":"a","name":"b.example.com","port":"9000"}]}}`},
	{"lb_policy round_robin", "ws h:1 {\n lb_policy round_robin\n}",
		`{"upstreams":["h:1"],"load_balancing":{"selection_policy":{"policy":"round_robin"}}}`},
	{"lb_policy least_conn", "ws h:1 {\n lb_policy least_conn\n}",
		`{"upstreams":["h:1"],"load_balancing":{"selection_policy":{"policy":"least_conn"}}}`},
	{"lb_policy random", "ws h:1 {\n lb_policy random\n}",
		`{"upstreams":["h:1"],"load_balancing":{"selection_policy":{"policy":"random"}}}`},
	{"lb_policy random_choose n", "ws h:1 {\n lb_policy random_choose 3\n}",
		`{"upstreams":["h:1"],"load_balancing":{"selection_policy":{"policy":"random_choose","choose":3}}}`},
	{"lb_policy first", "ws h:1 {\n lb_policy first\n}",
		`{"upstreams":["h:1"],"load_balancing":{"selection_policy":{"policy":"first"}}}`},
	{"lb_policy ip_hash", "ws h:1 {\n lb_policy ip_hash\n}",
		`{"upstreams":["h:1"],"load_balancing":{"selection_policy":{"policy":"ip_hash"}}}`},
	{"lb_policy client_ip_hash", "ws h:1 {\n lb_policy client_ip_hash\n}",
		`{"upstreams":["h:1"],"load_balancing":{"selection_policy":{"policy":"client_ip_hash"}}}`},
	{"lb_policy header", "ws h:1 {\n lb_policy header X-User\n}",
		`{"upstreams":["h:1"],"load_balancing":{"selection_policy":{"policy":"header","field":"X-User"}}}`},
	{"lb_policy cookie", "ws h:1 {\n lb_policy cookie\n}",
		`{"upstreams":["h:1"],"load_balancing":{"selection_policy":{"policy":"cookie"}}}`},
	{"lb_policy cookie name", "ws h:1 {\n lb_policy cookie sid\n}",
		`{"upstreams":["h:1"],"load_balancing":{"selection_policy":{"policy":"cookie","name":"sid"}}}`},
	{"lb_policy cookie block", "ws h:1 {\n lb_policy cookie sid s3cret {\n fallback first\n max_age 1h\n }\n}",
		`{"upstreams":["h:1"],"load_balancing":{"selection_policy":{"policy":"cookie","name":"sid","secret":"s3cret","max_age":3600000000000,"fallback":{"policy":"first"}}}}`},
	{"lb_policy uri_hash", "ws h:1 {\n lb_policy uri_hash\n}",
		`{"upstreams":["h:1"],"load_balancing":{"selection_policy":{"policy":"uri_hash"}}}`},
	{"lb_policy query", "ws h:1 {\n lb_policy query user {\n fallback round_robin\n }\n}",
		`{"upstreams":["h:1"],"load_balancing":{"selection_policy":{"policy":"query","key":"user","fallback":{"policy":"round_robin"}}}}`},
	{"lb_policy weighted_round_robin", "ws h:1 h:2 {\n lb_policy weighted_round_robin 3 1\n}",
		`{"upstreams":["h:1","h:2"],"load_balancing":{"selection_policy":{"policy":"weighted_round_robin","weights":[3,1]}}}`},
	{"transport http tls", "ws h:1 {\n transport http {\n tls\n tls_server_name up.internal\n tls_trust_pool file ca.pem\n }\n}",
		`{"upstreams":["h:1"],"tls":{"ca":{"pem_files":["ca.pem"],"provider":"file"},"server_name":"up.internal"}}`},
	{"lb_retries", "ws h:1 {\n lb_retries 2\n}",
		`{"upstreams":["h:1"],"load_balancing":{"retries":2}}`},
	{"lb_try_duration", "ws h:1 {\n lb_try_duration 1s\n}",
		`{"upstreams":["h:1"],"load_balancing":{"try_duration":1000000000}}`},
	{"lb_try_interval", "ws h:1 {\n lb_try_interval 100ms\n}",
		`{"upstreams":["h:1"],"load_balancing":{"try_interval":100000000}}`},
	{"health_uri", "ws h:1 {\n health_uri /health?x=1\n}",
		`{"upstreams":["h:1"],"health_checks":{"active":{"uri":"/health?x=1"}}}`},
	{"health_interval", "ws h:1 {\n health_interval 10s\n}",
		`{"upstreams":["h:1"],"health_checks":{"active":{"interval":10000000000}}}`},
	{"health_timeout", "ws h:1 {\n health_timeout 2s\n}",
		`{"upstreams":["h:1"],"health_checks":{"active":{"timeout":2000000000}}}`},
	{"health_passes", "ws h:1 {\n health_passes 2\n}",
		`{"upstreams":["h:1"],"health_checks":{"active":{"passes":2}}}`},
	{"health_fails", "ws h:1 {\n health_fails 3\n}",
		`{"upstreams":["h:1"],"health_checks":{"active":{"fails":3}}}`},
	{"health_headers", "ws h:1 {\n health_headers {\n X-Probe yes\n Accept a b\n }\n}",
		`{"upstreams":["h:1"],"health_checks":{"active":{"headers":{"X-Probe":["yes"],"Accept":["a","b"]}}}}`},
	{"fail_duration", "ws h:1 {\n fail_duration 30s\n}",
		`{"upstreams":["h:1"],"health_checks":{"passive":{"fail_duration":30000000000}}}`},
	{"max_fails", "ws h:1 {\n max_fails 3\n}",
		`{"upstreams":["h:1"],"health_checks":{"passive":{"max_fails":3}}}`},
	{"tls", "ws h:1 {\n tls\n}",
		`{"upstreams":["h:1"],"tls":{}}`},
	{"tls_server_name", "ws h:1 {\n tls_server_name upstream.internal\n}",
		`{"upstreams":["h:1"],"tls":{"server_name":"upstream.internal"}}`},
	{"tls_trusted_ca_certs", "ws h:1 {\n tls_trusted_ca_certs a.pem b.pem\n}",
		`{"upstreams":["h:1"],"tls":{"root_ca_pem_files":["a.pem","b.pem"]}}`},
	{"tls_client_auth", "ws h:1 {\n tls_client_auth c.pem k.pem\n}",
		`{"upstreams":["h:1"],"tls":{"client_certificate_file":"c.pem","client_certificate_key_file":"k.pem"}}`},
	{"tls_insecure_skip_verify", "ws h:1 {\n tls_insecure_skip_verify\n}",
		`{"upstreams":["h:1"],"tls":{"insecure_skip_verify":true}}`},
	{"header_up", "ws h:1 {\n header_up X-Real-IP {remote_host}\n header_up +X-Tag a\n header_up +X-Tag b\n header_up -Cookie\n}",
		`{"upstreams":["h:1"],"headers":{"request":{"set":{"X-Real-Ip":["{http.request.remote.host}"]},"add":{"X-Tag":["a","b"]},"delete":["Cookie"]}}}`},
	{"header_down", "ws h:1 {\n header_down X-Frame-Options DENY\n header_down +Set-Cookie a=1\n header_down -Server\n}",
		`{"upstreams":["h:1"],"headers":{"response":{"set":{"X-Frame-Options":["DENY"]},"add":{"Set-Cookie":["a=1"]},"delete":["Server"]}}}`},
	{"origins", "ws h:1 {\n origins https://*.example.com https://example.org\n}",
		`{"upstreams":["h:1"],"origins":["https://*.example.com","https://example.org"]}`},
	{"subprotocols", "ws h:1 {\n subprotocols chat.v2 chat.v1\n}",
		`{"upstreams":["h:1"],"subprotocols":["chat.v2","chat.v1"]}`},
	{"header limits", "ws h:1 {\n max_header_bytes 16KiB\n max_headers 50\n}",
		`{"upstreams":["h:1"],"max_header_bytes":16384,"max_headers":50}`},
	{"max_frame_size", "ws h:1 {\n max_frame_size 16KiB\n}",
		`{"upstreams":["h:1"],"max_frame_size":16384}`},
	{"max_message_size", "ws h:1 {\n max_message_size 1MiB\n}",
		`{"upstreams":["h:1"],"max_message_size":1048576}`},
	{"max_message_size SI", "ws h:1 {\n max_message_size 1MB\n}",
		`{"upstreams":["h:1"],"max_message_size":1000000}`},
	{"max_message_size bytes", "ws h:1 {\n max_message_size 4096\n}",
		`{"upstreams":["h:1"],"max_message_size":4096}`},
	{"allow text", "ws h:1 {\n allow text\n}",
		`{"upstreams":["h:1"],"allow":"text"}`},
	{"allow binary", "ws h:1 {\n allow binary\n}",
		`{"upstreams":["h:1"],"allow":"binary"}`},
	{"validate", "ws h:1 {\n validate utf8 json\n}",
		`{"upstreams":["h:1"],"validate":["utf8","json"]}`},
	{"rate_limit messages", "ws h:1 {\n rate_limit 20\n}",
		`{"upstreams":["h:1"],"rate_limit":{"messages_per_second":20}}`},
	{"rate_limit fractional delay", "ws h:1 {\n rate_limit 0.5 delay\n}",
		`{"upstreams":["h:1"],"rate_limit":{"messages_per_second":0.5,"mode":"delay"}}`},
	{"rate_limit all", "ws h:1 {\n rate_limit 20 64KiB burst 40 128KiB close\n}",
		`{"upstreams":["h:1"],"rate_limit":{"messages_per_second":20,"bytes_per_second":65536,"message_burst":40,"byte_burst":131072,"mode":"close"}}`},
	{"rate_limit bytes only", "ws h:1 {\n rate_limit 0 1MiB burst 0\n}",
		`{"upstreams":["h:1"],"rate_limit":{"bytes_per_second":1048576}}`},
	{"compression passthrough", "ws h:1 {\n compression passthrough\n}",
		`{"upstreams":["h:1"],"compression":"passthrough"}`},
	{"compression terminate", "ws h:1 {\n compression terminate\n}",
		`{"upstreams":["h:1"],"compression":"terminate"}`},
	{"compression off", "ws h:1 {\n compression off\n}",
		`{"upstreams":["h:1"],"compression":"off"}`},
	{"dial_timeout", "ws h:1 {\n dial_timeout 3s\n}",
		`{"upstreams":["h:1"],"dial_timeout":3000000000}`},
	{"idle_timeout", "ws h:1 {\n idle_timeout 5m\n}",
		`{"upstreams":["h:1"],"idle_timeout":300000000000}`},
	{"max_lifetime", "ws h:1 {\n max_lifetime 1d\n}",
		`{"upstreams":["h:1"],"max_lifetime":86400000000000}`},
	{"write_timeout", "ws h:1 {\n write_timeout 10s\n}",
		`{"upstreams":["h:1"],"write_timeout":10000000000}`},
	{"close_timeout", "ws h:1 {\n close_timeout 2s\n}",
		`{"upstreams":["h:1"],"close_timeout":2000000000}`},
	{"ping_interval", "ws h:1 {\n ping_interval 30s\n}",
		`{"upstreams":["h:1"],"ping_interval":30000000000}`},
	{"ping_timeout", "ws h:1 {\n ping_timeout 10s\n}",
		`{"upstreams":["h:1"],"ping_timeout":10000000000}`},
	{"max_sessions", "ws h:1 {\n max_sessions 100\n}",
		`{"upstreams":["h:1"],"max_sessions":100}`},
	{"drain_code", "ws h:1 {\n drain_code 1001\n}",
		`{"upstreams":["h:1"],"drain_code":1001}`},
	{"drain_window", "ws h:1 {\n drain_window 10s\n}",
		`{"upstreams":["h:1"],"drain_window":10000000000}`},
}

func TestCaddyfileOptionAdaptsToJSON(t *testing.T) {
	for _, tc := range caddyfileCases {
		t.Run(tc.name, func(t *testing.T) {
			got := adaptHandler(t, tc.directive)
			delete(got, "handler")
			want := decode(t, []byte(tc.want))
			if !reflect.DeepEqual(any(got), want) {
				g, _ := json.Marshal(got)
				t.Errorf("adapted to\n  %s\nwant\n  %s", g, tc.want)
			}
		})
	}
}

// adaptHandler adapts a site holding directive and returns its one ws handler.
func adaptHandler(t *testing.T, directive string) map[string]any {
	t.Helper()
	out, err := adapt(":8080 {\n" + directive + "\n}\n")
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	hs := findHandlers(decode(t, out), "ws")
	if len(hs) != 1 {
		t.Fatalf("found %d ws handlers in %s", len(hs), out)
	}
	return hs[0]
}

// TestCaddyfileCoversEveryJSONField checks that every JSON field of the
// handler can be reached from the Caddyfile.
func TestCaddyfileCoversEveryJSONField(t *testing.T) {
	seen := map[string]bool{}
	for _, tc := range caddyfileCases {
		var v map[string]any
		if err := json.Unmarshal([]byte(tc.want), &v); err != nil {
			t.Fatal(err)
		}
		collectPaths(v, "", seen)
	}
	for _, p := range jsonPaths(reflect.TypeOf(Handler{}), "") {
		if !seen[p] {
			t.Errorf("JSON field %s is not set by any Caddyfile case", p)
		}
	}
}

// freeMaps are JSON objects whose keys are data (header names, module fields).
var freeMaps = []string{
	"dynamic_upstreams", "health_checks.active.headers",
	"headers.request.add", "headers.request.set", "headers.response.add", "headers.response.set",
}

// collectPaths records the dotted paths of the keys of v (not inside maps
// of headers or module objects, whose keys are free).
func collectPaths(v map[string]any, prefix string, seen map[string]bool) {
	for k, e := range v {
		p := prefix + k
		seen[p] = true
		if m, ok := e.(map[string]any); ok && !slices.Contains(freeMaps, p) {
			collectPaths(m, p+".", seen)
		}
	}
}

// jsonPaths lists the dotted JSON paths of t's fields, descending into
// this package's structs.
func jsonPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || tag == "" || tag == "-" {
			continue
		}
		p := prefix + tag
		out = append(out, p)
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft.PkgPath() == reflect.TypeOf(Handler{}).PkgPath() {
			out = append(out, jsonPaths(ft, p+".")...)
		}
	}
	return out
}

func TestCaddyfileRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct{ name, directive, wantErr string }{
		{"unknown subdirective", "ws h:1 {\n frobnicate\n}", "unrecognized subdirective frobnicate"},
		{"to without upstreams", "ws {\n to\n}", "wrong argument count"},
		{"dynamic twice", "ws {\n dynamic a x 1\n dynamic a y 1\n}", "already specified"},
		{"dynamic unknown source", "ws {\n dynamic nope\n}", "http.reverse_proxy.upstreams.nope"},
		{"lb_policy unknown", "ws h:1 {\n lb_policy bogus\n}", "http.reverse_proxy.selection_policies.bogus"},
		{"lb_policy random_choose without n", "ws h:1 {\n lb_policy random_choose\n}", "wrong argument count"},
		{"transport http without tls", "ws h:1 {\n transport http {\n keepalive 10s\n }\n}", "only the tls options apply"},
		{"transport http with more than tls", "ws h:1 {\n transport http {\n tls\n versions h2\n }\n}", "only the tls options apply"},
		{"transport fastcgi", "ws h:1 {\n transport fastcgi\n}", "only the http transport"},
		{"lb_policy twice", "ws h:1 {\n lb_policy first\n lb_policy random\n}", "already specified"},
		{"lb_policy header without field", "ws h:1 {\n lb_policy header\n}", "wrong argument count"},
		{"lb_policy first with argument", "ws h:1 {\n lb_policy first 2\n}", "wrong argument count"},
		{"lb_retries not a number", "ws h:1 {\n lb_retries many\n}", `lb_retries: bad number "many"`},
		{"lb_retries two values", "ws h:1 {\n lb_retries 1 2\n}", "wrong argument count"},
		{"bad duration", "ws h:1 {\n idle_timeout soon\n}", `idle_timeout: bad duration "soon"`},
		{"duration missing", "ws h:1 {\n drain_window\n}", "wrong argument count"},
		{"bad size", "ws h:1 {\n max_message_size big\n}", `max_message_size: bad size "big"`},
		{"allow unknown", "ws h:1 {\n allow json\n}", `allow: unknown message type "json"`},
		{"validate unknown", "ws h:1 {\n validate xml\n}", `validate: unknown check "xml"`},
		{"validate nothing", "ws h:1 {\n validate\n}", "wrong argument count"},
		{"rate_limit nothing", "ws h:1 {\n rate_limit\n}", "wrong argument count"},
		{"rate_limit negative", "ws h:1 {\n rate_limit -1\n}", "bad messages per second"},
		{"rate_limit bad bytes", "ws h:1 {\n rate_limit 1 lots\n}", `bad bytes per second "lots"`},
		{"rate_limit burst without count", "ws h:1 {\n rate_limit 1 burst\n}", "burst needs a message count"},
		{"rate_limit bad mode", "ws h:1 {\n rate_limit 1 burst 2 3 drop\n}", `unknown mode "drop"`},
		{"rate_limit trailing", "ws h:1 {\n rate_limit 1 close now\n}", `unexpected "now"`},
		{"header_up without value", "ws h:1 {\n header_up X-A\n}", "needs a value"},
		{"header_up delete with value", "ws h:1 {\n header_up -X-A b\n}", "takes no value"},
		{"header_up replace", "ws h:1 {\n header_up X-A a b\n}", "search and replace is not supported"},
		{"header_down nothing", "ws h:1 {\n header_down\n}", "wrong argument count"},
		{"tls with argument", "ws h:1 {\n tls on\n}", "wrong argument count"},
		{"tls_client_auth one file", "ws h:1 {\n tls_client_auth c.pem\n}", "certificate file and a key file"},
		{"tls_insecure_skip_verify argument", "ws h:1 {\n tls_insecure_skip_verify yes\n}", "wrong argument count"},
		{"drain_code not a number", "ws h:1 {\n drain_code restart\n}", `drain_code: bad number "restart"`},
		{"compression unknown", "ws h:1 {\n compression on\n}", `compression: unknown mode "on"`},
		{"compression nothing", "ws h:1 {\n compression\n}", "wrong argument count"},
		{"compression two modes", "ws h:1 {\n compression passthrough terminate\n}", "wrong argument count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := adapt(":8080 {\n" + tc.directive + "\n}\n")
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestDirectiveOrderBeforeResponders checks the default order: in one route,
// ws runs before respond, reverse_proxy and file_server whatever the order
// they are written in.
func TestDirectiveOrderBeforeResponders(t *testing.T) {
	out, err := adapt(`:8080 {
	file_server
	reverse_proxy /api/* 127.0.0.1:9000
	respond /hello "hi"
	ws /chat/* 127.0.0.1:9001
}
`)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, name := range []string{"ws", "static_response", "reverse_proxy", "file_server"} {
		if len(findHandlers(decode(t, out), name)) != 1 {
			t.Fatalf("want one %s handler in %s", name, out)
		}
	}
	// the site's routes, in order: each holds one directive's handler
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []json.RawMessage `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, route := range cfg.Apps.HTTP.Servers["srv0"].Routes {
		v := decode(t, route)
		for _, name := range []string{"ws", "static_response", "reverse_proxy", "file_server"} {
			if len(findHandlers(v, name)) > 0 {
				order = append(order, name)
			}
		}
	}
	if len(order) != 4 || order[0] != "ws" {
		t.Fatalf("handler order %v, want ws first (routes %s)", order, out)
	}
}

// TestUnmarshalCaddyfileDirect checks UnmarshalCaddyfile on its own, as
// other adapters would call it.
func TestUnmarshalCaddyfileDirect(t *testing.T) {
	h := new(Handler)
	d := caddyfile.NewTestDispenser("ws a:1 {\n max_sessions 5\n drain_code 1001\n}")
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := Handler{Upstreams: []string{"a:1"}, MaxSessions: 5, DrainCode: 1001}
	if !reflect.DeepEqual(*h, want) {
		t.Fatalf("got %+v, want %+v", *h, want)
	}
	if h.Validate() != nil {
		t.Fatal(h.Validate())
	}
}

// TestCompressionCaddyfileAndJSON checks that `compression` in the Caddyfile
// and "compression" in JSON give the same proxy mode, "" and off included.
func TestCompressionCaddyfileAndJSON(t *testing.T) {
	for _, tc := range []struct {
		directive, json string
		want            proxy.CompressionMode
	}{
		{"ws h:1", `{"upstreams":["h:1"]}`, proxy.CompressionOff},
		{"ws h:1 {\n compression off\n}", `{"upstreams":["h:1"],"compression":"off"}`, proxy.CompressionOff},
		{"ws h:1 {\n compression passthrough\n}", `{"upstreams":["h:1"],"compression":"passthrough"}`, proxy.CompressionPassthrough},
		{"ws h:1 {\n compression terminate\n}", `{"upstreams":["h:1"],"compression":"terminate"}`, proxy.CompressionTerminate},
	} {
		adapted := adaptHandler(t, tc.directive)
		delete(adapted, "handler")
		fromCaddyfile, _ := json.Marshal(adapted)
		for _, raw := range []string{string(fromCaddyfile), tc.json} {
			var h Handler
			if err := json.Unmarshal([]byte(raw), &h); err != nil {
				t.Fatal(err)
			}
			if err := h.Validate(); err != nil {
				t.Fatalf("%s: Validate: %v", raw, err)
			}
			cfg, err := h.proxyConfig()
			if err != nil {
				t.Fatalf("%s: %v", raw, err)
			}
			if cfg.Compression != tc.want {
				t.Errorf("%s: proxy compression %v, want %v", raw, cfg.Compression, tc.want)
			}
		}
	}
	h := Handler{Upstreams: []string{"h:1"}, Compression: "gzip"}
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), `compression: unknown mode "gzip"`) {
		t.Errorf("Validate of compression gzip: %v", err)
	}
}
