// Command chi runs the wsgate demo on a chi router: an HTML page at /, a WebSocket
// echo built on wsmw at /echo, and the inspect-and-forward proxy at /ws, whose
// default upstream is that echo. Run it with no flags and open http://127.0.0.1:8080/.
package main

import (
	"context"
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
	"sync"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
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
	debug          bool
}

func parseFlags(args []string, out io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("chi", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to listen on (host:port)")
	fs.Var(&o.upstreams, "upstream", "upstream WebSocket URL for /ws, e.g. ws://10.0.0.5:9000/socket (repeatable; default: the embedded /echo)")
	fs.StringVar(&o.lb, "lb", "round_robin", "load-balancing policy: round_robin, least_conn, random, random_choose, first, ip_hash, header:NAME, cookie:NAME")
	fs.Int64Var(&o.maxMessageSize, "max-message-size", 1<<20, "largest message accepted in either direction, in bytes (1009 beyond)")
	fs.Int64Var(&o.maxFrameSize, "max-frame-size", 1<<20, "largest frame accepted in either direction, in bytes (1009 beyond)")
	fs.Var(&o.origins, "origin", "extra allowed browser Origin pattern, e.g. https://*.example.com (repeatable; the page's own host is always allowed)")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", 5*time.Minute, "close sessions with no data frame in either direction for this long (1001); 0 disables")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Second, "on SIGINT/SIGTERM, how long to wait for sessions to close (they get 1012)")
	fs.StringVar(&o.compression, "compression", "off", "permessage-deflate on /ws: off (strip the offer), passthrough (negotiate end to end), terminate (compressed to the browser, plain upstream); the demo /echo accepts it unless off")
	fs.BoolVar(&o.debug, "debug", false, "log handshakes and refusals at debug level")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./examples/chi [flags]\n\nServes a demo page at /, a wsmw echo at /echo and the proxy at /ws.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
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

// echoSessions tracks the /echo connections so that shutdown can close them with 1001.
type echoSessions struct {
	mu    sync.Mutex
	conns map[*wsmw.Conn]struct{}
	wg    sync.WaitGroup
}

func (e *echoSessions) serve(c *wsmw.Conn, r *http.Request) {
	e.mu.Lock()
	if e.conns == nil {
		e.conns = make(map[*wsmw.Conn]struct{})
	}
	e.conns[c] = struct{}{}
	e.wg.Add(1)
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.conns, c)
		e.mu.Unlock()
		e.wg.Done()
	}()
	buf := make([]byte, 0, 4096)
	for {
		op, msg, err := c.Read(context.Background(), buf[:0])
		if err != nil {
			return
		}
		if err := c.Write(context.Background(), op, msg); err != nil {
			return
		}
		buf = msg
	}
}

func (e *echoSessions) closeAll(code wsmw.StatusCode) {
	e.mu.Lock()
	for c := range e.conns {
		go c.Close(code, "server shutting down")
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// newRouter builds the demo's routes; upstreams are resolved against the listener's address.
func newRouter(o *options, addr string, log *zap.Logger) (http.Handler, *proxy.Proxy, *echoSessions, error) {
	upstreams := o.upstreams
	if len(upstreams) == 0 {
		upstreams = []string{"ws://" + addr + "/echo"}
	}
	name, arg, _ := strings.Cut(o.lb, ":")
	var args []string
	if arg != "" {
		args = []string{arg}
	}
	lb, err := proxy.ParseBalancer(name, args...)
	if err != nil {
		return nil, nil, nil, err
	}
	compression, err := proxy.ParseCompressionMode(o.compression)
	if err != nil {
		return nil, nil, nil, err
	}
	var echoCompression *wsmw.CompressionOptions
	if compression != proxy.CompressionOff {
		echoCompression = &wsmw.CompressionOptions{}
	}
	p, err := proxy.New(proxy.Config{
		Upstreams:      upstreams,
		Balancer:       lb,
		Retries:        len(upstreams) - 1,
		MaxFrameSize:   o.maxFrameSize,
		MaxMessageSize: o.maxMessageSize,
		Origins:        o.origins,
		IdleTimeout:    o.idleTimeout,
		Compression:    compression,
		PassiveHealth:  proxy.PassiveHealth{MaxFails: 3, FailDuration: 30 * time.Second},
		Logger:         log,
		LogFields: func(r *http.Request) []zap.Field {
			return []zap.Field{zap.String("request_id", middleware.GetReqID(r.Context()))}
		},
	})
	if err != nil {
		return nil, nil, nil, err
	}
	echo := &echoSessions{}
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.RealIP, middleware.Recoverer, middleware.Timeout(time.Minute))
	r.Get("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
	notWS := func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "this endpoint speaks WebSocket", http.StatusUpgradeRequired)
	}
	r.With(wsmw.Middleware(echo.serve, &wsmw.ServerConfig{
		Origins:        o.origins,
		MaxFrameSize:   o.maxFrameSize,
		MaxMessageSize: o.maxMessageSize,
		Compression:    echoCompression,
		Logger:         log,
	})).Get("/echo", notWS)
	r.With(p.Middleware).Get("/ws", notWS)
	return r, p, echo, nil
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

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	handler, p, echo, err := newRouter(o, ln.Addr().String(), log)
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", zap.String("url", "http://"+ln.Addr().String()+"/"))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-errc:
		return err
	case s := <-sig:
		log.Info("shutting down", zap.String("signal", s.String()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	// Proxied sessions first (their upstream may be our own /echo), then the echo, then HTTP.
	if err := p.Shutdown(ctx); err != nil {
		log.Warn("sessions still open after the drain timeout", zap.Error(err))
	}
	echo.closeAll(wsmw.StatusGoingAway)
	return srv.Shutdown(ctx)
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
