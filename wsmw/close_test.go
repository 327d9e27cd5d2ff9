package wsmw

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseClosePayload(t *testing.T) {
	for _, tc := range []struct {
		name   string
		body   string
		code   StatusCode
		reason string
		ok     bool
	}{
		{"Empty", "", StatusNoStatusRcvd, "", true},
		{"OneByte", "\x03", 0, "", false},
		{"CodeOnly", closeBody(1000, ""), 1000, "", true},
		{"Reason", closeBody(1001, "going away"), 1001, "going away", true},
		{"UTF8Reason", closeBody(4000, "κόσμε"), 4000, "κόσμε", true},
		{"MaxLength", closeBody(1000, strings.Repeat("r", 123)), 1000, strings.Repeat("r", 123), true},
		{"TooLong", closeBody(1000, strings.Repeat("r", 124)), 0, "", false},
		{"InvalidReason", closeBody(1000, "\xff"), 0, "", false},
		{"TruncatedRune", closeBody(1000, "ab\xce"), 0, "", false},
		{"SurrogateReason", closeBody(1000, "\xed\xa0\x80"), 0, "", false},
		{"Code0", closeBody(0, ""), 0, "", false},
		{"Code999", closeBody(999, ""), 0, "", false},
		{"Code1004", closeBody(1004, ""), 0, "", false},
		{"Code1005", closeBody(1005, ""), 0, "", false},
		{"Code1006", closeBody(1006, ""), 0, "", false},
		{"Code1015", closeBody(1015, ""), 0, "", false},
		{"Code1016", closeBody(1016, ""), 0, "", false},
		{"Code2999", closeBody(2999, ""), 0, "", false},
		{"Code3000", closeBody(3000, ""), 3000, "", true},
		{"Code4999", closeBody(4999, "x"), 4999, "x", true},
		{"Code5000", closeBody(5000, ""), 0, "", false},
		{"Code65535", closeBody(65535, ""), 0, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, reason, err := ParseClosePayload([]byte(tc.body))
			if !tc.ok {
				if !errors.Is(err, ErrProtocol) {
					t.Errorf("ParseClosePayload(%q) = %v %q %v, want ErrProtocol", tc.body, code, reason, err)
				}
				return
			}
			if err != nil || code != tc.code || reason != tc.reason {
				t.Errorf("ParseClosePayload(%q) = %v %q %v, want %v %q", tc.body, code, reason, err, tc.code, tc.reason)
			}
		})
	}
}

func TestStatusCodeValidOnWire(t *testing.T) {
	for c := StatusCode(-1); c < 70000; c++ {
		want := (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999)
		if c.ValidOnWire() != want {
			t.Fatalf("%d.ValidOnWire() = %v", c, c.ValidOnWire())
		}
	}
}

func TestAppendClosePayload(t *testing.T) {
	long := strings.Repeat("a", 122) + "é" // 124 bytes: the 2-byte rune straddles the 123-byte limit
	for _, tc := range []struct {
		name   string
		code   StatusCode
		reason string
		body   string
	}{
		{"Normal", 1000, "", "\x03\xe8"},
		{"Reason", 1001, "bye", "\x03\xe9bye"},
		{"Private", 4999, "é", "\x13\x87é"},
		{"NoStatus", StatusNoStatusRcvd, "dropped", ""},
		{"Abnormal", StatusAbnormalClosure, "dropped", ""},
		{"TLS", StatusTLSHandshake, "", ""},
		{"Invalid999", 999, "x", ""},
		{"Exactly123", 1000, strings.Repeat("b", 123), "\x03\xe8" + strings.Repeat("b", 123)},
		{"Truncated", 1000, strings.Repeat("b", 200), "\x03\xe8" + strings.Repeat("b", 123)},
		{"TruncatedAtRune", 1000, long, "\x03\xe8" + strings.Repeat("a", 122)},
		{"TruncatedAt3ByteRune", 1000, strings.Repeat("a", 121) + "€€", "\x03\xe8" + strings.Repeat("a", 121)},
		{"TruncatedAt4ByteRune", 1000, strings.Repeat("a", 120) + "😀", "\x03\xe8" + strings.Repeat("a", 120)},
		{"RunesFitExactly", 1000, strings.Repeat("a", 119) + "😀x", "\x03\xe8" + strings.Repeat("a", 119) + "😀"},
		// A reason that is not UTF-8 would make the peer fail the connection: it is repaired.
		{"InvalidUTF8Reason", 1000, "ab\xffc", "\x03\xe8ab\uFFFDc"},
		{"TruncatedUTF8Reason", 1000, "ab\xce", "\x03\xe8ab\uFFFD"},
		{"InvalidUTF8LongReason", 1000, strings.Repeat("a", 121) + "\xff", "\x03\xe8" + strings.Repeat("a", 121)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendClosePayload([]byte("prefix"), tc.code, tc.reason)
			if string(got) != "prefix"+tc.body {
				t.Errorf("AppendClosePayload(%v, %q) = %q, want %q", tc.code, tc.reason, got[6:], tc.body)
			}
			body := got[6:]
			if len(body) > 125 || !utf8.Valid(body[min(2, len(body)):]) {
				t.Errorf("body of %d bytes, valid UTF-8 %v", len(body), utf8.Valid(body[min(2, len(body)):]))
			}
			// Whatever is written parses back.
			code, reason, err := ParseClosePayload(body)
			if err != nil {
				t.Fatalf("written body %q does not parse: %v", body, err)
			}
			if len(body) == 0 {
				if code != StatusNoStatusRcvd {
					t.Errorf("empty body parsed as %v", code)
				}
			} else if code != tc.code || !strings.HasPrefix(strings.ToValidUTF8(tc.reason, "\uFFFD"), reason) {
				t.Errorf("round trip: %v %q", code, reason)
			}
		})
	}
	// Round trip over every valid code.
	for c := StatusCode(0); c < 6000; c++ {
		if !c.ValidOnWire() {
			continue
		}
		code, reason, err := ParseClosePayload(AppendClosePayload(nil, c, "r"))
		if err != nil || code != c || reason != "r" {
			t.Fatalf("round trip of %v: %v %q %v", c, code, reason, err)
		}
	}
}

func TestStatusCodeString(t *testing.T) {
	for c, s := range map[StatusCode]string{
		1000: "1000 NormalClosure", 1001: "1001 GoingAway", 1002: "1002 ProtocolError", 1003: "1003 UnsupportedData",
		1005: "1005 NoStatusRcvd", 1006: "1006 AbnormalClosure", 1007: "1007 InvalidPayload", 1008: "1008 PolicyViolation",
		1009: "1009 MessageTooBig", 1010: "1010 MandatoryExtension", 1011: "1011 InternalError", 1012: "1012 ServiceRestart",
		1013: "1013 TryAgainLater", 1014: "1014 BadGateway", 1015: "1015 TLSHandshake",
		1004: "1004", 3000: "3000", 4999: "4999", 0: "0", -1: "-1",
	} {
		if c.String() != s {
			t.Errorf("StatusCode(%d).String() = %q, want %q", int(c), c.String(), s)
		}
	}
	if got := fmt.Sprint(StatusMessageTooBig); got != "1009 MessageTooBig" {
		t.Errorf("fmt.Sprint = %q", got)
	}
}

func TestCloseErrors(t *testing.T) {
	ce := &CloseError{Code: 4001, Reason: "x"}
	if CloseStatus(fmt.Errorf("wrapped: %w", ce)) != 4001 {
		t.Error("CloseStatus does not see a wrapped *CloseError")
	}
	if !strings.Contains(ce.Error(), "4001") || !strings.Contains(ce.Error(), `"x"`) {
		t.Errorf("CloseError text %q", ce.Error())
	}
	if s := (&CloseError{Code: StatusNoStatusRcvd}).Error(); !strings.Contains(s, "1005") {
		t.Errorf("CloseError text %q", s)
	}
	fe := &FailError{Code: 1007, Reason: "invalid utf-8", Err: ErrInvalidUTF8}
	if !errors.Is(fe, ErrInvalidUTF8) || CloseStatus(fe) != 1007 || !strings.Contains(fe.Error(), "1007") {
		t.Errorf("FailError %v", fe)
	}
	if CloseStatus(errors.New("other")) != -1 || CloseStatus(nil) != -1 {
		t.Error("CloseStatus of a plain error is not -1")
	}
	if !errors.Is(errLengthMSB, ErrProtocol) || !errors.Is(errNonMinimalLength, ErrProtocol) {
		t.Error("framing errors do not unwrap to ErrProtocol")
	}
}
