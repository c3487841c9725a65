package server

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"herald/auth"
	"herald/channels"
	"herald/hub"
	"herald/ingress"
)

// api wraps a server API handler with the API key check. The API is
// disabled (404) when no key is configured.
func (s *Server) api(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.APIKey == "" {
			writeError(w, http.StatusNotFound, "server API disabled (set HERALD_API_KEY)")
			return
		}
		tok, ok := auth.Bearer(r.Header)
		if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.APIKey)) != 1 {
			writeError(w, http.StatusUnauthorized, "missing or wrong API key")
			return
		}
		next(w, r)
	}
}

type publishRequest struct {
	Channel        string          `json:"channel"`
	Data           json.RawMessage `json:"data"`
	IdempotencyKey string          `json:"idempotency_key"`
}

type publishResponse struct {
	Channel   string `json:"channel"`
	Offset    uint64 `json:"offset"`
	Epoch     string `json:"epoch"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

// MaxPublishBody bounds a publish request.
const MaxPublishBody = 1 << 20

// historyReplyBytes bounds a GET /v1/history reply, so that a thousand
// large publications are never read and encoded at once: beyond it the
// reply is truncated as a history frame is, and the caller reads on with
// since.
const historyReplyBytes = 16 << 20

// deadLettersReplyBytes bounds a GET /v1/deadletters reply likewise: a
// thousand dead letters of 64 KiB bodies would be 64 MiB or more.
const deadLettersReplyBytes = 16 << 20

func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	var req publishRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxPublishBody))
	err := dec.Decode(&req)
	if err == nil {
		// Anything after the object, a second one included, would be
		// dropped silently.
		if _, after := dec.Token(); after != io.EOF {
			err = errors.New("unexpected data after the JSON object")
			if errors.As(after, new(*http.MaxBytesError)) {
				err = after
			}
		}
	}
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			writeError(w, http.StatusRequestEntityTooLarge, "body over 1 MiB")
			return
		}
		writeError(w, http.StatusBadRequest, "body must be a JSON object with channel and data: "+err.Error())
		return
	}
	if _, err := channels.Parse(req.Channel); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(req.Data) == 0 || string(req.Data) == "null" {
		writeError(w, http.StatusBadRequest, `"data" is required`)
		return
	}
	var data bytes.Buffer
	if err := json.Compact(&data, req.Data); err != nil {
		writeError(w, http.StatusBadRequest, `"data" is not valid JSON`)
		return
	}
	if !utf8.Valid(data.Bytes()) {
		// Subscribers get data in text frames, which must be UTF-8.
		writeError(w, http.StatusBadRequest, `"data" is not valid UTF-8`)
		return
	}
	if d := ingress.Depth(data.Bytes()); d > ingress.MaxDepth {
		// Many clients' JSON decoders refuse deeper documents.
		writeError(w, http.StatusBadRequest, fmt.Sprintf(`"data" nests %d deep; at most %d`, d, ingress.MaxDepth))
		return
	}
	if limit := s.hub.MaxPublication(); data.Len() > limit {
		// A larger one could not be sent to any subscriber.
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf(`"data" is %d bytes; subscribers can be sent at most %d (half of HERALD_SEND_QUEUE_BYTES)`, data.Len(), limit))
		return
	}
	opts := channels.PublishOptions{IdempotencyTTL: s.cfg.DedupWindow}
	if req.IdempotencyKey != "" {
		if len(req.IdempotencyKey) > 256 {
			writeError(w, http.StatusBadRequest, `"idempotency_key" longer than 256 bytes`)
			return
		}
		// Scoped apart from the ingress's provider event ids.
		opts.IdempotencyKey = "api:" + req.IdempotencyKey
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	res, err := s.broker.Publish(ctx, req.Channel, data.Bytes(), opts)
	if err != nil {
		s.brokerError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, publishResponse{Channel: req.Channel, Offset: res.Offset, Epoch: res.Epoch, Duplicate: res.Duplicate})
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	channel := q.Get("channel")
	if _, err := channels.Parse(channel); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var since *channels.Position
	if v := q.Get("since"); v != "" {
		off, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, `"since" must be a non-negative integer offset`)
			return
		}
		since = &channels.Position{Offset: off, Epoch: q.Get("epoch")}
	} else if q.Has("epoch") {
		// Read as the newest, it would answer what the caller did not ask.
		writeError(w, http.StatusBadRequest, `"epoch" needs "since"`)
		return
	}
	var limit *int
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, `"limit" must be an integer`)
			return
		}
		limit = &n
	}
	opts, err := hub.HistoryRequest(since, limit, historyReplyBytes)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	res, err := s.broker.History(ctx, channel, opts)
	if err != nil {
		s.brokerError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, hub.NewHistoryReply(channel, res, opts))
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, `"limit" must be between 1 and 1000`)
			return
		}
		limit = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	items, more, err := s.dead.List(ctx, limit, deadLettersReplyBytes)
	if err != nil {
		s.brokerError(w, r, err)
		return
	}
	reply := map[string]any{"deadletters": items}
	if more {
		reply["truncated"] = true
	}
	writeJSON(w, http.StatusOK, reply)
}

// brokerError answers a failed broker call: 503 when a retry may succeed,
// else 500, which is logged, since its body says nothing of the cause.
func (s *Server) brokerError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, channels.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		writeError(w, http.StatusServiceUnavailable, "broker unavailable; retry")
		return
	}
	s.cfg.Logger.Error("server API: broker call failed", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error")
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
