package hub

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"herald/channels"
)

// Client frame types (SPEC §2).
const (
	typeConnect     = "connect"
	typeSubscribe   = "subscribe"
	typeUnsubscribe = "unsubscribe"
	typeHistory     = "history"
	typeRefresh     = "refresh"
	typePing        = "ping"
)

// Error codes sent in error frames.
const (
	codeBadRequest           = "bad_request"
	codeForbidden            = "forbidden"
	codeAlreadySubscribed    = "already_subscribed"
	codeNotSubscribed        = "not_subscribed"
	codeTooManySubscriptions = "too_many_subscriptions"
	codeUnavailable          = "unavailable"
	codeInternal             = "internal"
)

// frame is a decoded client frame. Fields not used by its type are ignored.
type frame struct {
	ID      *int64             `json:"id"`
	Type    string             `json:"type"`
	Channel string             `json:"channel"`
	Since   *channels.Position `json:"since"`
	Limit   *int               `json:"limit"`
	Token   string             `json:"token"`
}

// errProtocol marks a frame that breaks the protocol itself (close 4002),
// as opposed to a well-formed request that is refused (an error frame).
var errProtocol = errors.New("protocol error")

// protocolErr is errProtocol with what was wrong, on one line: it becomes
// the close frame's reason.
func protocolErr(what string) error { return fmt.Errorf("%w: %s", errProtocol, what) }

// requestError is a refusal sent back as an error frame.
type requestError struct {
	code, message string
}

func (e *requestError) Error() string { return e.message }

func badRequest(msg string) *requestError { return &requestError{codeBadRequest, msg} }

// decodeFrame parses one client text frame. It returns errProtocol (wrapped)
// when the frame is not a JSON object or has no known type, and a
// *requestError, with the frame's id when it could be read, when a field has
// the wrong type.
func decodeFrame(data []byte) (frame, error) {
	var f frame
	if !utf8.Valid(data) {
		return f, protocolErr("frame is not valid UTF-8")
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return f, protocolErr("frame is not a JSON object")
	}
	err := json.Unmarshal(data, &f)
	var typeErr *json.UnmarshalTypeError
	switch {
	case err != nil && !errors.As(err, &typeErr):
		return f, protocolErr("frame is not a JSON object")
	case err != nil && typeErr.Field == "type":
		return f, protocolErr(`"type" must be a string`)
	case f.Type == "":
		return f, protocolErr(`frame has no "type"`)
	case !knownType(f.Type):
		// Before a field's type: a frame of no known type is a protocol
		// error whatever its fields hold.
		return f, protocolErr("unknown frame type")
	case err != nil:
		return f, badRequest("field " + strconv.Quote(typeErr.Field) + " has the wrong type")
	}
	return f, nil
}

func knownType(t string) bool {
	switch t {
	case typeConnect, typeSubscribe, typeUnsubscribe, typeHistory, typeRefresh, typePing:
		return true
	}
	return false
}

// Server frames. Replies carry the id of the frame they answer; frames the
// server sends on its own carry none.

type connectedFrame struct {
	ID      *int64 `json:"id,omitempty"`
	Type    string `json:"type"`
	Client  string `json:"client"`
	Node    string `json:"node"`
	Expires int64  `json:"expires"`
}

type subscribedFrame struct {
	ID        *int64 `json:"id,omitempty"`
	Type      string `json:"type"`
	Channel   string `json:"channel"`
	Epoch     string `json:"epoch"`
	Offset    uint64 `json:"offset"`
	Recovered bool   `json:"recovered"`
	Reason    string `json:"reason,omitempty"`
}

type channelFrame struct {
	ID      *int64 `json:"id,omitempty"`
	Type    string `json:"type"`
	Channel string `json:"channel"`
}

// HistoryPublication is one entry of a history reply.
type HistoryPublication struct {
	Offset uint64          `json:"offset"`
	Data   json.RawMessage `json:"data"`
}

// HistoryReply is the body of a history frame and of GET /v1/history.
// Recovered and Reason are set only when the request named a position to
// read since: whether everything after it is still in this epoch's log.
type HistoryReply struct {
	ID           *int64               `json:"id,omitempty"`
	Type         string               `json:"type,omitempty"`
	Channel      string               `json:"channel"`
	Epoch        string               `json:"epoch"`
	Offset       uint64               `json:"offset"`
	Recovered    *bool                `json:"recovered,omitempty"`
	Reason       string               `json:"reason,omitempty"`
	Publications []HistoryPublication `json:"publications"`
	// Truncated says that publications were left out to keep the reply
	// within its size bound (see bounded).
	Truncated bool `json:"truncated,omitempty"`
}

// NewHistoryReply turns a broker snapshot read with opts (see
// HistoryRequest) into the reply shape, kept within opts.MaxBytes (see
// bounded). Truncated also says when the broker stopped on that bound:
// fewer than opts.Limit came back and the log holds more in the
// direction read.
func NewHistoryReply(channel string, res channels.HistoryResult, opts channels.HistoryOptions) HistoryReply {
	r := HistoryReply{
		Channel:      channel,
		Epoch:        res.Epoch,
		Offset:       res.Offset,
		Publications: make([]HistoryPublication, 0, len(res.Publications)),
	}
	for _, p := range res.Publications {
		r.Publications = append(r.Publications, HistoryPublication{Offset: p.Offset, Data: p.Data})
	}
	newest := opts.Since == nil
	if !newest {
		ok, reason := res.Recover(*opts.Since)
		r.Recovered, r.Reason = &ok, reason
	}
	r.Publications, r.Truncated = bounded(r.Publications, opts.MaxBytes, newest)
	if n := len(r.Publications); !r.Truncated && n > 0 && n < opts.Limit {
		if newest {
			r.Truncated = r.Publications[0].Offset > res.Earliest
		} else {
			r.Truncated = r.Publications[n-1].Offset < res.Offset
		}
	}
	return r
}

type refreshedFrame struct {
	ID      *int64 `json:"id,omitempty"`
	Type    string `json:"type"`
	Expires int64  `json:"expires"`
}

type replyFrame struct {
	ID   *int64 `json:"id,omitempty"`
	Type string `json:"type"`
}

type errorFrame struct {
	ID      *int64 `json:"id,omitempty"`
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// marshal encodes a server frame's JSON. The types above cannot fail to
// encode.
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	// Publication data goes out as it was published, as in live frames:
	// escaped, each "<", ">" and "&" would take six bytes, and a history
	// reply bounded by its data's size could outgrow the send queue.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("hub: encoding a server frame: " + err.Error())
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// encode makes a server frame ready for the wire: its JSON in a websocket
// text frame.
func encode(v any) []byte {
	msg := marshal(v)
	f := make([]byte, headerLen(len(msg)), headerLen(len(msg))+len(msg))
	putHeader(f, len(msg))
	return append(f, msg...)
}

// maxHeader is the longest header of a frame the server sends.
const maxHeader = 10

// headerLen is the header length of a server frame of n payload bytes
// (RFC 6455 §5.2: unmasked, 7-bit, 16-bit or 64-bit length).
func headerLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 0xffff:
		return 4
	}
	return maxHeader
}

// putHeader writes the header of a final, unmasked text frame of n
// payload bytes at the start of f.
func putHeader(f []byte, n int) {
	f[0] = 0x80 | 0x1 // FIN, text
	switch headerLen(n) {
	case 2:
		f[1] = byte(n)
	case 4:
		f[1] = 126
		binary.BigEndian.PutUint16(f[2:], uint16(n))
	default:
		f[1] = 127
		binary.BigEndian.PutUint64(f[2:], uint64(n))
	}
}

// pubFrame encodes a publication straight into a websocket text frame,
// with one allocation. It is made once per publication and written as it
// is to every subscriber: framing, like encoding, is not repeated per
// subscriber.
func pubFrame(channel string, p channels.Publication) []byte {
	b := make([]byte, maxHeader, maxHeader+pubFixed+len(channel)+len(p.Epoch)+len(p.Data))
	b = appendPub(b, channel, p)
	n := len(b) - maxHeader
	f := b[maxHeader-headerLen(n):]
	putHeader(f, n)
	return f
}

// The fixed parts of a pub frame.
const (
	pubStart  = `{"type":"pub","channel":`
	pubOffset = `,"offset":`
	pubEpoch  = `,"epoch":`
	pubData   = `,"data":`
	// pubFixed is their length, with the quotes around channel and epoch,
	// the closing brace and the longest offset.
	pubFixed = len(pubStart+pubOffset+pubEpoch+pubData) + 4 + 1 + 20
)

// appendPub encodes a pub frame. It is built by hand because it is the one
// frame on the hot path: each publication is encoded once per node and the
// same bytes go to every subscriber. It grows b once, to the frame's size,
// so that a nil b costs exactly one allocation.
func appendPub(b []byte, channel string, p channels.Publication) []byte {
	b = slices.Grow(b, pubFixed+len(channel)+len(p.Epoch)+len(p.Data))
	b = append(b, pubStart...)
	b = appendString(b, channel)
	b = append(b, pubOffset...)
	b = strconv.AppendUint(b, p.Offset, 10)
	b = append(b, pubEpoch...)
	b = appendString(b, p.Epoch)
	b = append(b, pubData...)
	b = append(b, p.Data...)
	return append(b, '}')
}

// appendString appends s as a JSON string. Channel names and epochs are
// plain ASCII, so the quick path is the only one taken in practice.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
