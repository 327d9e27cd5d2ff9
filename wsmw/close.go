package wsmw

import (
	"encoding/binary"
	"strconv"
	"strings"
	"unicode/utf8"
)

// StatusCode is a close status code (RFC 6455 §7.4, IANA registry).
type StatusCode int

// Close codes. 1005, 1006 and 1015 are reserved for reporting and never written on the wire.
const (
	StatusNormalClosure      StatusCode = 1000
	StatusGoingAway          StatusCode = 1001
	StatusProtocolError      StatusCode = 1002
	StatusUnsupportedData    StatusCode = 1003
	StatusNoStatusRcvd       StatusCode = 1005
	StatusAbnormalClosure    StatusCode = 1006
	StatusInvalidPayload     StatusCode = 1007
	StatusPolicyViolation    StatusCode = 1008
	StatusMessageTooBig      StatusCode = 1009
	StatusMandatoryExtension StatusCode = 1010
	StatusInternalError      StatusCode = 1011
	StatusServiceRestart     StatusCode = 1012
	StatusTryAgainLater      StatusCode = 1013
	StatusBadGateway         StatusCode = 1014
	StatusTLSHandshake       StatusCode = 1015
)

var statusNames = map[StatusCode]string{
	1000: "NormalClosure", 1001: "GoingAway", 1002: "ProtocolError", 1003: "UnsupportedData",
	1005: "NoStatusRcvd", 1006: "AbnormalClosure", 1007: "InvalidPayload", 1008: "PolicyViolation",
	1009: "MessageTooBig", 1010: "MandatoryExtension", 1011: "InternalError", 1012: "ServiceRestart",
	1013: "TryAgainLater", 1014: "BadGateway", 1015: "TLSHandshake",
}

func (c StatusCode) String() string {
	if n, ok := statusNames[c]; ok {
		return strconv.Itoa(int(c)) + " " + n
	}
	return strconv.Itoa(int(c))
}

// ValidOnWire reports whether c may appear in a close frame (RFC 6455 §7.4.1, §7.4.2):
// 1000-1003, 1007-1014 and the registered/private range 3000-4999.
func (c StatusCode) ValidOnWire() bool {
	switch {
	case c >= 1000 && c <= 1003, c >= 1007 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}

// maxCloseReason is the longest reason that fits in a control frame after the 2-byte code.
const maxCloseReason = maxControlPayload - 2

// ParseClosePayload decodes and validates a close frame body (RFC 6455 §5.5.1).
// An empty body yields StatusNoStatusRcvd. A 1-byte body, an invalid code and a
// reason that is not UTF-8 are all ErrProtocol: the body is a malformed control
// frame (1002), not a text message (1007).
func ParseClosePayload(p []byte) (StatusCode, string, error) {
	switch {
	case len(p) == 0:
		return StatusNoStatusRcvd, "", nil
	case len(p) == 1:
		return 0, "", ErrProtocol
	case len(p) > maxControlPayload:
		return 0, "", ErrProtocol
	}
	code := StatusCode(binary.BigEndian.Uint16(p))
	if !code.ValidOnWire() {
		return code, "", ErrProtocol
	}
	if !utf8.Valid(p[2:]) {
		return code, "", ErrProtocol
	}
	return code, string(p[2:]), nil
}

// AppendClosePayload appends the close body for code and reason to b. StatusNoStatusRcvd
// (and any code not valid on the wire, such as 1005/1006/1015) produces an empty body,
// which is how "no code" is said on the wire. Invalid UTF-8 in reason is replaced
// by U+FFFD (a peer fails the connection on it); reasons longer than 123 bytes are
// cut at a rune boundary.
func AppendClosePayload(b []byte, code StatusCode, reason string) []byte {
	if !code.ValidOnWire() {
		return b
	}
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	return append(b, truncateReason(strings.ToValidUTF8(reason, "\uFFFD"))...)
}

// truncateReason cuts reason to maxCloseReason bytes without splitting a rune.
func truncateReason(reason string) string {
	if len(reason) <= maxCloseReason {
		return reason
	}
	cut := maxCloseReason
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut]
}
