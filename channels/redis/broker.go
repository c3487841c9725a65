package redis

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"herald/channels"
)

// Options configure a Broker. Zero values take the defaults in brackets.
type Options struct {
	// Client is a *goredis.Client (single Redis) or *goredis.ClusterClient.
	// The broker does not close it. To a cluster client it adds a hook
	// that reloads the client's map of the cluster after a call that got
	// no reply (see mapReloader).
	Client goredis.UniversalClient
	// HistorySize is how many publications each log keeps [1000].
	HistorySize int
	// HistoryTTL is how long publications are kept after the channel's
	// last publication [24h].
	HistoryTTL time.Duration
	// MetaTTL is how long a log's offset and epoch outlive its last
	// activity [30 days, and never less than twice HistoryTTL, so that a
	// client back after its history expired learns offset_expired, not a
	// new epoch].
	MetaTTL time.Duration
	// IdempotencyTTL is the default time an idempotency key is remembered [72h].
	IdempotencyTTL time.Duration
	// HealthInterval is how often each pub/sub feed is pinged; a feed
	// silent for three intervals is re-established and its channels
	// re-read [1s].
	HealthInterval time.Duration
	// Timeout bounds each Redis call made on the broker's own behalf
	// (backfills) [2s].
	Timeout time.Duration
	Logger  *slog.Logger
}

func (o *Options) setDefaults() {
	if o.HistorySize <= 0 {
		o.HistorySize = 1000
	}
	if o.HistoryTTL <= 0 {
		o.HistoryTTL = 24 * time.Hour
	}
	if o.MetaTTL <= 0 {
		o.MetaTTL = 30 * 24 * time.Hour
	}
	o.MetaTTL = max(o.MetaTTL, 2*o.HistoryTTL)
	if o.IdempotencyTTL <= 0 {
		o.IdempotencyTTL = 72 * time.Hour
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Broker is a channels.Broker on Redis.
type Broker struct {
	opts    Options
	client  goredis.UniversalClient
	cluster *goredis.ClusterClient // nil on a single Redis
	log     *slog.Logger

	mu      sync.Mutex
	handler channels.Handler
	feeds   map[string]*feed  // channel → its live feed
	shards  map[string]*shard // master address → its pub/sub connection
	closed  bool
	stop    chan struct{} // closed by Close
}

var _ channels.Broker = (*Broker)(nil)

// New returns a broker; call Start before subscribing.
func New(opts Options) (*Broker, error) {
	opts.setDefaults()
	if opts.Client == nil {
		return nil, errors.New("redis broker: Client is required")
	}
	b := &Broker{
		opts:   opts,
		client: opts.Client,
		log:    opts.Logger,
		feeds:  make(map[string]*feed),
		shards: make(map[string]*shard),
		stop:   make(chan struct{}),
	}
	switch c := opts.Client.(type) {
	case *goredis.ClusterClient:
		b.cluster = c
		c.AddHook(mapReloader{c})
	case *goredis.Client:
	default:
		return nil, fmt.Errorf("redis broker: unsupported client %T", opts.Client)
	}
	return b, nil
}

// Start implements channels.Broker.
func (b *Broker) Start(h channels.Handler) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.handler != nil {
		return errors.New("redis broker: already started")
	}
	b.handler = h
	if b.cluster != nil {
		go b.watchTopology()
	}
	return nil
}

// Close stops every feed. The Redis client stays open (it is the caller's).
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.stop)
	b.mu.Unlock()
	// No shard is added once closed is set (shardFor).
	for _, s := range b.allShards() {
		s.close()
	}
	return nil
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// allShards returns the pub/sub connections as they are now.
func (b *Broker) allShards() []*shard {
	b.mu.Lock()
	defer b.mu.Unlock()
	shards := make([]*shard, 0, len(b.shards))
	for _, s := range b.shards {
		shards = append(shards, s)
	}
	return shards
}

// Ready implements channels.Broker: Redis answers, and every pub/sub feed
// this node depends on is connected and answering its pings.
func (b *Broker) Ready(ctx context.Context) error {
	if b.isClosed() {
		return channels.ErrUnavailable
	}
	if err := b.client.Ping(ctx).Err(); err != nil {
		return unavailable("ping", err)
	}
	for _, s := range b.allShards() {
		if err := s.healthy(); err != nil {
			return err
		}
	}
	return nil
}

// Key names; see the package documentation.

func (b *Broker) metaKey(ch string) string { return "herald:{" + ch + "}:meta" }
func (b *Broker) logKey(ch string) string  { return "herald:{" + ch + "}:log" }
func (b *Broker) idemKey(ch, key string) string {
	return "herald:{" + ch + "}:idem:" + key
}

// feedName is the pub/sub channel of a herald channel.
func feedName(ch string) string { return "herald:{" + ch + "}" }

// channelOf inverts feedName.
func channelOf(name string) (string, bool) {
	s, ok := strings.CutPrefix(name, "herald:{")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(s, "}")
}

// Publish implements channels.Broker.
func (b *Broker) Publish(ctx context.Context, ch string, data json.RawMessage, opts channels.PublishOptions) (channels.PublishResult, error) {
	// go-redis's cluster client sends a call again when its reply did not
	// come in time or its connection broke, and the first may have been
	// run. A publication without an idempotency key gets one of its own,
	// for a while, so that such a copy appends nothing.
	own := b.cluster != nil && opts.IdempotencyKey == ""
	if own {
		opts.IdempotencyKey, opts.IdempotencyTTL = "resend:"+randomHex(16), resendWindow
	}
	reply, err := b.run(ctx, publishScript,
		[]string{b.metaKey(ch), b.logKey(ch), b.idemKey(ch, opts.IdempotencyKey)},
		[]byte(data), newEpoch(), b.opts.HistorySize, ms(b.opts.HistoryTTL), ms(b.opts.MetaTTL), b.idemTTL(opts), feedName(ch),
	).Slice()
	if err != nil {
		return channels.PublishResult{}, unavailable("publish", err)
	}
	if len(reply) != 2 {
		return channels.PublishResult{}, fmt.Errorf("redis publish: unexpected reply %v", reply)
	}
	flag, _ := reply[0].(int64)
	s, _ := reply[1].(string)
	pos, err := parsePosition(s)
	if err != nil {
		return channels.PublishResult{}, fmt.Errorf("redis publish: %w", err)
	}
	// A copy of our own call finding our own key is no duplicate.
	return channels.PublishResult{Position: pos, Duplicate: flag == 0 && !own}, nil
}

// resendWindow is how long a publication's own idempotency key is kept.
// go-redis sends every copy of a call within the caller's deadline (5 s
// for /v1/publish), and a master runs the copies it holds in the order it
// reads them, so the key is there when the last one runs. Kept short: a
// slot being moved refuses its channels' publications until all of the
// slot's keys have moved.
const resendWindow = 15 * time.Second

// Seen implements channels.Deduplicator.
func (b *Broker) Seen(ctx context.Context, ch, key string) (bool, error) {
	n, err := b.client.Exists(ctx, b.idemKey(ch, key)).Result()
	if err != nil {
		return false, unavailable("dedup check", err)
	}
	return n > 0, nil
}

// History implements channels.Broker.
func (b *Broker) History(ctx context.Context, ch string, opts channels.HistoryOptions) (channels.HistoryResult, error) {
	return b.history(ctx, ch, opts, false, nil)
}

// history reads a log. With resync, since is a position this node itself
// handed on, and handedOn the data it handed on there (nil: unknown). One
// beyond the log's newest offset in the same epoch, or other data at that
// offset now, means that Redis came back from an older state (a snapshot,
// a replica behind) and lost publications, perhaps overtaken since by new
// ones under the same offsets: the log then takes a new epoch, so that
// every node and every resume sees the gap instead of offsets used twice.
// A client's since never does that, or any client could make all others
// resync.
func (b *Broker) history(ctx context.Context, ch string, opts channels.HistoryOptions, resync bool, handedOn []byte) (channels.HistoryResult, error) {
	mode, sinceOff, sinceEpoch, digest := "newest", "0", "", ""
	if opts.Since != nil {
		mode, sinceOff, sinceEpoch = "since", strconv.FormatUint(opts.Since.Offset, 10), opts.Since.Epoch
		if resync {
			mode = "resync"
		}
		if resync && handedOn != nil {
			sum := sha1.Sum(handedOn)
			digest = hex.EncodeToString(sum[:])
		}
	}
	reply, err := b.run(ctx, historyScript, []string{b.metaKey(ch), b.logKey(ch)},
		newEpoch(), ms(b.opts.MetaTTL), mode, sinceOff, sinceEpoch, max(opts.Limit, 0), max(opts.MaxBytes, 0), digest,
	).Slice()
	if err != nil {
		return channels.HistoryResult{}, unavailable("history", err)
	}
	res, err := parseHistory(reply, opts.Since == nil)
	if err != nil {
		return channels.HistoryResult{}, fmt.Errorf("redis history of %s: %w", ch, err)
	}
	return res, nil
}

func parseHistory(reply []any, newestFirst bool) (channels.HistoryResult, error) {
	var res channels.HistoryResult
	if len(reply) != 4 {
		return res, fmt.Errorf("unexpected reply of %d elements", len(reply))
	}
	epoch, _ := reply[0].(string)
	top, _ := reply[1].(int64)
	earliest, _ := reply[2].(int64)
	entries, _ := reply[3].([]any)
	res.Position = channels.Position{Offset: uint64(top), Epoch: epoch}
	res.Earliest = uint64(earliest)
	res.Publications = make([]channels.Publication, 0, len(entries))
	for _, e := range entries {
		p, err := parseEntry(e, epoch)
		if err != nil {
			return res, err
		}
		res.Publications = append(res.Publications, p)
	}
	if newestFirst {
		for i, j := 0, len(res.Publications)-1; i < j; i, j = i+1, j-1 {
			res.Publications[i], res.Publications[j] = res.Publications[j], res.Publications[i]
		}
	}
	return res, nil
}

// parseEntry reads a stream entry: {"<offset>-0", {"d", data}}.
func parseEntry(e any, epoch string) (channels.Publication, error) {
	parts, _ := e.([]any)
	if len(parts) != 2 {
		return channels.Publication{}, fmt.Errorf("bad stream entry %v", e)
	}
	id, _ := parts[0].(string)
	fields, _ := parts[1].([]any)
	off, err := strconv.ParseUint(strings.TrimSuffix(id, "-0"), 10, 64)
	if err != nil || len(fields) != 2 {
		return channels.Publication{}, fmt.Errorf("bad stream entry %q", id)
	}
	data, _ := fields[1].(string)
	return channels.Publication{Offset: off, Epoch: epoch, Data: json.RawMessage(data)}, nil
}

// parsePosition reads "<offset>:<epoch>".
func parsePosition(s string) (channels.Position, error) {
	off, epoch, ok := strings.Cut(s, ":")
	n, err := strconv.ParseUint(off, 10, 64)
	if !ok || err != nil {
		return channels.Position{}, fmt.Errorf("bad position %q", s)
	}
	return channels.Position{Offset: n, Epoch: epoch}, nil
}

// parseMessage reads a pub/sub payload: "<offset>:<epoch>:<data>".
func parseMessage(s string) (channels.Publication, error) {
	off, rest, ok1 := strings.Cut(s, ":")
	epoch, data, ok2 := strings.Cut(rest, ":")
	n, err := strconv.ParseUint(off, 10, 64)
	if !ok1 || !ok2 || err != nil {
		return channels.Publication{}, fmt.Errorf("bad pub/sub message %.40q", s)
	}
	return channels.Publication{Offset: n, Epoch: epoch, Data: json.RawMessage(data)}, nil
}

// run runs a script on one channel's keys. While a cluster moves the
// channel's slot to another master, Redis refuses a script whose keys are
// split between the two with TRYAGAIN, and a retry can bounce between the
// two with MOVED and ASK; each time having run nothing. go-redis follows
// for a few tens of milliseconds only; moving a slot's keys takes longer.
// So run keeps trying, at most the broker's timeout.
func (b *Broker) run(ctx context.Context, script *goredis.Script, keys []string, args ...any) *goredis.Cmd {
	deadline := time.Now().Add(b.opts.Timeout)
	for {
		cmd := script.Run(ctx, b.client, keys, args...)
		if b.cluster == nil || !notRun(cmd.Err()) || time.Now().After(deadline) {
			return cmd
		}
		select {
		case <-ctx.Done():
			return cmd
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// notRun reports whether err is a cluster's refusal of a call it did not
// run because the call's slot is moving.
func notRun(err error) bool {
	var rerr goredis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	return strings.HasPrefix(msg, "TRYAGAIN ") || strings.HasPrefix(msg, "MOVED ") || strings.HasPrefix(msg, "ASK ")
}

// mapReloader has a cluster client reload its map of the cluster after a
// call that got no reply: a connection refused or a timeout, as when a
// master died. go-redis reloads the map by itself only on a redirect, or
// once a minute; a node would otherwise keep sending a dead master's slots
// to its address long after a replica took over. Reloads run in the
// background, one at a time.
type mapReloader struct{ c *goredis.ClusterClient }

func (h mapReloader) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h mapReloader) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		err := next(ctx, cmd)
		h.after(err)
		return err
	}
}

func (h mapReloader) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		err := next(ctx, cmds)
		h.after(err)
		return err
	}
}

func (h mapReloader) after(err error) {
	var rerr goredis.Error // a reply from Redis (goredis.Nil is one)
	if err == nil || errors.As(err, &rerr) || errors.Is(err, context.Canceled) {
		return
	}
	h.c.ReloadState(context.Background())
}

// unavailable wraps errors that mean "Redis cannot be reached or cannot
// serve right now" (network errors, timeouts, and the transient replies of
// a loading, failing-over, busy or full server) with channels.ErrUnavailable.
// Other Redis replies (a key of the wrong type, a script bug) stay internal
// errors: retrying would not help.
func unavailable(op string, err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		transient := false
		// OOM: a full Redis under noeviction refuses writes until
		// memory is freed; the last is a full server refusing a
		// connection.
		for _, prefix := range []string{"LOADING", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY", "BUSY", "MOVED", "ASK", "NOREPLICAS", "OOM", "ERR max number of clients reached"} {
			transient = transient || strings.HasPrefix(msg, prefix)
		}
		if !transient {
			return fmt.Errorf("redis %s: %w", op, err)
		}
	}
	return fmt.Errorf("redis %s: %w: %w", op, channels.ErrUnavailable, err)
}

func ms(d time.Duration) string { return strconv.FormatInt(max(d.Milliseconds(), 1), 10) }

func newEpoch() string { return randomHex(8) }

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b)
}
