// Command client drives wsmw's client side through the Autobahn TestSuite in
// fuzzingserver mode: it asks the fuzzing server for the number of cases, runs
// each one by connecting to /runCase?case=N&agent=AGENT and echoing every
// message back exactly as received (text as text, binary as binary) until the
// server closes, and finally asks the server to write its reports with
// /updateReports?agent=AGENT. The verdicts are in the server's report
// directory; see ../README.md.
//
// Every connection offers permessage-deflate (RFC 7692) unless -deflate off, so
// that the compression cases 12.* and 13.* run instead of being reported
// UNIMPLEMENTED; when it is negotiated, every echo is sent compressed.
//
//	go run ./integration/autobahn/client -url ws://127.0.0.1:9001 -agent wsgate
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/wsmw"
)

// config is what the driver needs; flags fill it in main.
type config struct {
	// base is the fuzzing server's URL (ws://host:port).
	base string
	// agent names this client in the server's reports.
	agent string
	// only, if non-zero, runs this case only.
	only int
	// caseTimeout bounds one case (the suite's performance cases take a while).
	caseTimeout time.Duration
	// maxMessage bounds received frames and messages (the suite sends up to 16 MiB).
	maxMessage int64
	// deflate is what the client offers of permessage-deflate.
	deflate deflateMode
	// serverBits and clientBits, when 8-15, ask for those window sizes
	// (server_max_window_bits, client_max_window_bits=N); 0 leaves them at 15.
	serverBits, clientBits int
	// log receives one line per case.
	log *log.Logger
}

func main() {
	var cfg config
	cfg.register(flag.CommandLine)
	flag.Parse()
	cfg.log = log.New(os.Stderr, "", log.LstdFlags)
	if err := cfg.checkWindowBits(); err != nil {
		cfg.log.Fatal(err)
	}
	if err := run(context.Background(), cfg); err != nil {
		cfg.log.Fatal(err)
	}
}

// register defines the driver's flags on fs, filling in cfg.
func (cfg *config) register(fs *flag.FlagSet) {
	fs.StringVar(&cfg.base, "url", "ws://127.0.0.1:9001", "fuzzing server URL")
	fs.StringVar(&cfg.agent, "agent", "wsgate", "agent name in the reports")
	fs.IntVar(&cfg.only, "case", 0, "run only this case number (default: all)")
	fs.DurationVar(&cfg.caseTimeout, "case-timeout", 5*time.Minute, "time limit of one case")
	fs.Int64Var(&cfg.maxMessage, "max-message", 64<<20, "largest frame and message accepted, in bytes")
	cfg.deflate = deflateOn
	fs.Var(&cfg.deflate, "deflate", "permessage-deflate offer: on (context takeover both ways), no-context-takeover (neither way), or off")
	fs.IntVar(&cfg.serverBits, "server-max-window-bits", 0, "offer server_max_window_bits=N (8-15; 0: not offered)")
	fs.IntVar(&cfg.clientBits, "client-max-window-bits", 0, "offer client_max_window_bits=N (8-15; 0: offered without a value)")
}

// run drives the whole suite: count, every case, reports.
func run(ctx context.Context, cfg config) error {
	n, err := caseCount(ctx, cfg)
	if err != nil {
		return fmt.Errorf("getCaseCount: %w", err)
	}
	cfg.log.Printf("%d cases", n)
	first, last := 1, n
	if cfg.only != 0 {
		if cfg.only < 1 || cfg.only > n {
			return fmt.Errorf("case %d: the server has cases 1 to %d", cfg.only, n)
		}
		first, last = cfg.only, cfg.only
	}
	for i := first; i <= last; i++ {
		start := time.Now()
		res, err := runCase(ctx, cfg, i)
		status := "closed"
		if err != nil {
			status = err.Error()
		}
		cfg.log.Printf("case %d/%d: %d messages echoed in %v (%s): %s", i, n, res.messages, time.Since(start).Round(time.Millisecond), res.deflate, status)
	}
	if err := updateReports(ctx, cfg); err != nil {
		return fmt.Errorf("updateReports: %w", err)
	}
	cfg.log.Printf("reports updated for agent %q", cfg.agent)
	return nil
}

// dialConfig is the configuration of every connection to the server.
func (cfg config) dialConfig() *wsmw.DialConfig {
	return &wsmw.DialConfig{
		MaxFrameSize:   cfg.maxMessage,
		MaxMessageSize: cfg.maxMessage,
		CloseTimeout:   5 * time.Second,
		Compression:    cfg.compression(),
	}
}

// endpoint returns the URL of one of the server's resources.
func (cfg config) endpoint(path string, query url.Values) string {
	u := strings.TrimRight(cfg.base, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return u
}

// caseCount asks the server how many cases it has: it sends the number as a
// text message and closes.
func caseCount(ctx context.Context, cfg config) (int, error) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, _, err := wsmw.Dial(dctx, cfg.endpoint("/getCaseCount", nil), cfg.dialConfig())
	if err != nil {
		return 0, err
	}
	defer c.CloseNow()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	op, p, err := c.Read(context.Background(), nil)
	if err != nil {
		return 0, err
	}
	if op != wsmw.MessageText {
		return 0, fmt.Errorf("case count sent as %v", op)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(p)))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("case count %q is not a number", p)
	}
	waitClose(c)
	return n, nil
}

// caseResult is what the driver saw of one case.
type caseResult struct {
	messages int    // messages echoed
	deflate  string // the permessage-deflate parameters in force, or "no compression"
}

// runCase runs case i: every message is echoed back as it came until the
// connection ends; with permessage-deflate in force, WriteMessage compresses
// each echo. The error is the way the connection ended when that was not a
// close from the server (the suite's verdict, not this driver, says whether
// that was right).
func runCase(ctx context.Context, cfg config, i int) (caseResult, error) {
	res := caseResult{deflate: "not connected"}
	ctx, cancel := context.WithTimeout(ctx, cfg.caseTimeout)
	defer cancel()
	q := url.Values{"case": {strconv.Itoa(i)}, "agent": {cfg.agent}}
	c, _, err := wsmw.Dial(ctx, cfg.endpoint("/runCase", q), cfg.dialConfig())
	if err != nil {
		return res, err
	}
	defer c.CloseNow()
	res.deflate = describeDeflate(c)
	stop := context.AfterFunc(ctx, func() { c.CloseNow() })
	defer stop()
	var buf []byte
	for {
		op, p, err := c.Read(context.Background(), buf[:0])
		if err != nil {
			var ce *wsmw.CloseError
			if errors.As(err, &ce) {
				return res, nil // the server closed; Read answered its close
			}
			if ctx.Err() != nil {
				return res, fmt.Errorf("case timed out after %v", cfg.caseTimeout)
			}
			return res, err
		}
		buf = p
		if err := c.Write(context.Background(), op, p); err != nil {
			return res, err
		}
		res.messages++
	}
}

// updateReports asks the server to write the reports for the agent; it closes when done.
func updateReports(ctx context.Context, cfg config) error {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, _, err := wsmw.Dial(dctx, cfg.endpoint("/updateReports", url.Values{"agent": {cfg.agent}}), cfg.dialConfig())
	if err != nil {
		return err
	}
	defer c.CloseNow()
	// Writing the reports can take a while for a full run.
	c.SetReadDeadline(time.Now().Add(5 * time.Minute))
	waitClose(c)
	return nil
}

// waitClose reads until the server's close (answered by ReadMessage) or the end of the connection.
func waitClose(c *wsmw.Conn) {
	for {
		if _, _, err := c.Read(context.Background(), nil); err != nil {
			return
		}
	}
}
