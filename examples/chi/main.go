// Command chi runs the wsgate demo on a chi router: an HTML page at /, a WebSocket
// echo built on wsmw at /echo, and the inspect-and-forward proxy at /ws, whose
// default upstream is that echo. Run it with no flags and open http://127.0.0.1:8080/.
package main

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsmw"
)

//go:embed page.html
var page []byte

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// options are the command-line flags.
type options struct {
	listen         string
	upstreams      listFlag
	lb             string
	maxMessageSize int64
	maxFrameSize   int64
	origins        listFlag
	idleTimeout    time.Duration
	drainTimeout   time.Duration
	compression    string
	headerTimeout  time.Duration
	maxHeaderBytes int
	tlsCert        string
	tlsKey         string
	debug          bool
}

func parseFlags(args []string, out io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("chi", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to listen on (host:port)")
	fs.Var(&o.upstreams, "upstream", "upstream WebSocket URL for /ws, e.g. ws://10.0.0.5:9000/socket (repeatable; default: the embedded /echo)")
	fs.StringVar(&o.lb, "lb", "round_robin", "load-balancing policy, as Caddy's lb_policy: round_robin, least_conn, random, random_choose[:N], first, ip_hash, uri_hash, query:KEY, header:FIELD, cookie[:NAME[:SECRET]] (a sticky cookie, as Caddy sets it: for Socket.IO on several upstreams)")
	fs.Int64Var(&o.maxMessageSize, "max-message-size", 1<<20, "largest message accepted in either direction, in bytes (1009 beyond)")
	fs.Int64Var(&o.maxFrameSize, "max-frame-size", 1<<20, "largest frame accepted in either direction, in bytes (1009 beyond)")
	fs.Var(&o.origins, "origin", "extra allowed browser Origin pattern, e.g. https://*.example.com (repeatable; the page's own host is always allowed)")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", 5*time.Minute, "close sessions with no data frame in either direction for this long (1001); 0 disables")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Second, "on SIGINT/SIGTERM, how long to wait for sessions to close (they get 1012)")
	fs.StringVar(&o.compression, "compression", "off", "permessage-deflate on /ws: off (strip the offer), passthrough (negotiate end to end), terminate (compressed to the browser, plain upstream); the demo /echo accepts it unless off")
	fs.DurationVar(&o.headerTimeout, "read-header-timeout", 10*time.Second, "http.Server ReadHeaderTimeout: a client has this long to send its request headers (slowloris)")
	fs.IntVar(&o.maxHeaderBytes, "max-header-bytes", 64<<10, "http.Server MaxHeaderBytes: larger request headers get 431 from net/http")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "serve HTTPS (HTTP/1.1 and HTTP/2) with this certificate file (PEM); needs -tls-key")
	fs.StringVar(&o.tlsKey, "tls-key", "", "the private key file (PEM) of -tls-cert")
	fs.BoolVar(&o.debug, "debug", false, "log handshakes and refusals at debug level")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./examples/chi [flags]\n\nServes a demo page at /, a wsmw echo at /echo and the proxy at /ws.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return nil, errors.New("-tls-cert and -tls-key go together")
	}
	return o, nil
}

func newLogger(debug bool) *zap.Logger {
	cfg := zap.NewDevelopmentConfig() // human-readable console lines
	cfg.DisableStacktrace = true
	cfg.EncoderConfig.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
	if !debug {
		cfg.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	}
	l, err := cfg.Build()
	if err != nil {
		return zap.NewExample()
	}
	return l
}

// echo serves /echo: each message goes back as it came. The buffer is reused,
// so reading allocates nothing once it has grown to the largest message.
func echo(c *wsmw.Conn, r *http.Request) {
	buf := make([]byte, 0, 4096)
	for {
		op, msg, err := c.Read(r.Context(), buf[:0])
		if err != nil {
			return // the peer closed (Read answered it), or the connection failed
		}
		if err := c.Write(r.Context(), op, msg); err != nil {
			return
		}
		buf = msg
	}
}

// newRouter builds the demo's routes; upstreams are resolved against the listener's address.
func newRouter(o *options, addr string, log *zap.Logger) (http.Handler, *proxy.Proxy, *wsmw.Group, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p, err := newProxy(o, addr, log, reg)
	if err != nil {
		return nil, nil, nil, err
	}
	echoConns := &wsmw.Group{} // for the graceful shutdown of /echo
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.RealIP, middleware.Recoverer, middleware.Timeout(time.Minute))
	r.Get("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
	r.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	notWS := func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "this endpoint speaks WebSocket", http.StatusUpgradeRequired)
	}
	compression := &wsmw.CompressionOptions{}
	if o.compression == "off" {
		compression = nil
	}
	webSocketRoute(r, "/echo", wsmw.Middleware(echoConns.Handler(echo), &wsmw.ServerConfig{
		Origins:        o.origins,
		MaxFrameSize:   o.maxFrameSize,
		MaxMessageSize: o.maxMessageSize,
		Compression:    compression,
		Logger:         log,
	}), notWS)
	webSocketRoute(r, "/ws", p.Middleware, notWS)
	// Socket.IO (or SockJS...) behind the proxy: its WebSocket upgrades are
	// proxied frame by frame, its long-polling requests forwarded as plain HTTP,
	// both to the upstream the balancer picks (-lb cookie:lb keeps a client on one).
	r.With(p.Middleware).Handle("/socket.io/*", p.HTTPHandler())
	return r, p, echoConns, nil
}

// newProxy builds /ws's (and /socket.io/'s) proxy from the flags, its metrics
// registered on reg; with no -upstream its upstream is the demo's own /echo.
func newProxy(o *options, addr string, log *zap.Logger, reg prometheus.Registerer) (*proxy.Proxy, error) {
	upstreams := o.upstreams
	var upstreamTLS *tls.Config
	if len(upstreams) == 0 {
		upstreams = []string{"ws://" + addr + "/echo"}
		if o.tlsCert != "" {
			// The embedded echo is this very listener, whose certificate need not name its address.
			upstreams = []string{"wss://" + addr + "/echo"}
			upstreamTLS = &tls.Config{InsecureSkipVerify: true}
		}
	}
	parts := strings.Split(o.lb, ":") // policy[:arg[:arg]]
	lb, err := proxy.ParseBalancer(parts[0], parts[1:]...)
	if err != nil {
		return nil, err
	}
	compression, err := proxy.ParseCompressionMode(o.compression)
	if err != nil {
		return nil, err
	}
	metrics, err := proxy.NewMetrics(reg, "wsgate")
	if err != nil {
		return nil, err
	}
	return proxy.New(proxy.Config{
		Upstreams:      upstreams,
		UpstreamTLS:    upstreamTLS,
		Balancer:       lb,
		MaxFrameSize:   o.maxFrameSize,
		MaxMessageSize: o.maxMessageSize,
		Origins:        o.origins,
		IdleTimeout:    o.idleTimeout,
		Compression:    compression,
		PassiveHealth:  proxy.PassiveHealth{MaxFails: 3, FailDuration: 30 * time.Second},
		Logger:         log,
		Metrics:        metrics,
		LogFields: func(r *http.Request) []zap.Field {
			return []zap.Field{zap.String("request_id", middleware.GetReqID(r.Context()))}
		},
	})
}

// webSocketRoute routes pattern through mw, which takes the WebSockets, to h
// for GET (an HTTP/1.1 upgrade) and CONNECT (an extended CONNECT on HTTP/2
// and HTTP/3, RFC 8441 and RFC 9220).
func webSocketRoute(r chi.Router, pattern string, mw func(http.Handler) http.Handler, h http.HandlerFunc) {
	r.With(mw).Get(pattern, h)
	r.With(mw).Connect(pattern, h)
}

func run(args []string) error {
	o, err := parseFlags(args, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log := newLogger(o.debug)
	defer log.Sync()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return serve(ctx, o, log, nil)
}

// serve runs the demo on o.listen until ctx ends (a signal), then shuts down:
// proxied sessions get 1012 (their upstream may be this process's own /echo,
// so they go first), /echo connections 1001, then HTTP stops, all within
// -drain-timeout. ready, if set, is told the listening address.
func serve(ctx context.Context, o *options, log *zap.Logger, ready func(addr string)) error {
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	handler, p, echoConns, err := newRouter(o, ln.Addr().String(), log)
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: o.headerTimeout, MaxHeaderBytes: o.maxHeaderBytes}
	errc := make(chan error, 1)
	scheme := "http"
	if o.tlsCert != "" {
		scheme = "https"
		go func() { errc <- srv.ServeTLS(ln, o.tlsCert, o.tlsKey) }()
		logHTTP2(log)
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	log.Info("listening", zap.String("url", scheme+"://"+ln.Addr().String()+"/"))
	if ready != nil {
		ready(ln.Addr().String())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		log.Info("shutting down", zap.Error(context.Cause(ctx)))
	}
	dctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	if err := p.Shutdown(dctx); err != nil {
		log.Warn("sessions still open after the drain timeout", zap.Error(err))
	}
	if err := echoConns.Shutdown(dctx, wsmw.StatusGoingAway, "server shutting down"); err != nil {
		log.Warn("echo connections still open after the drain timeout", zap.Error(err))
	}
	return srv.Shutdown(dctx)
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
