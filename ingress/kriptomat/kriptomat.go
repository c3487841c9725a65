// Package kriptomat is the ingress adapter for Kriptomat's white-label API
// webhooks: exchange buy and sell, KYC status, bank account status, fiat
// and crypto withdrawals and deposits, and master balance alerts.
//
// Kriptomat sends bare JSON objects and documents no signature, so requests
// authenticate with the shared secret (Bearer or ?key=); restrict the
// source addresses with HERALD_INGRESS_KRIPTOMAT_ALLOW as well.
package kriptomat

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	"herald/ingress"
)

// Slug is the provider's name in URLs and configuration.
const Slug = "kriptomat"

// Provider returns the Kriptomat provider.
func Provider() ingress.Provider {
	return ingress.Provider{Slug: Slug, Parse: Parse}
}

// payload holds every field any Kriptomat webhook carries; which ones are
// set tells the kinds apart.
type payload struct {
	ID             json.RawMessage `json:"id"`
	UserID         json.RawMessage `json:"user_id"`
	Type           string          `json:"type"`
	State          string          `json:"state"`
	Pair           string          `json:"pair"`
	Date           string          `json:"date"`
	Currency       string          `json:"currency"`
	Amount         json.Number     `json:"amount"`
	Price          json.Number     `json:"price"`
	Fee            json.Number     `json:"fee"`
	Subtotal       json.Number     `json:"subtotal"`
	Total          json.Number     `json:"total"`
	Deposited      json.Number     `json:"deposited"`
	BankFee        json.Number     `json:"bank_fee"`
	Received       json.Number     `json:"received"`
	Status         json.RawMessage `json:"status"`
	DocumentStatus []document      `json:"documentStatus"`
	Error          string          `json:"error"`
}

type review struct {
	ModerationComment string   `json:"moderationComment"`
	ClientComment     string   `json:"clientComment"`
	ReviewAnswer      string   `json:"reviewAnswer"`
	RejectLabels      []string `json:"rejectLabels"`
	ReviewRejectType  string   `json:"reviewRejectType"`
}

type kycStatus struct {
	CreateDate   string `json:"createDate"`
	ReviewDate   string `json:"reviewDate"`
	StartDate    string `json:"startDate"`
	ReviewResult review `json:"reviewResult"`
	ReviewStatus string `json:"reviewStatus"`
	ApplicantID  string `json:"applicantId"`
}

type document struct {
	IDDocType    string `json:"idDocType"`
	ReviewResult review `json:"reviewResult"`
}

// Parse implements ingress.Provider.Parse.
func Parse(r *ingress.Request) (*ingress.Event, error) {
	var p *payload
	if err := ingress.Decode(r.Body, &p); err != nil {
		return nil, err
	}
	if p == nil { // null
		return nil, ingress.Malformed("not a JSON object")
	}
	raw, err := ingress.Compact(r.Body)
	if err != nil {
		return nil, err
	}
	var ev *ingress.Event
	switch {
	case len(p.Status) > 0 && p.Status[0] == '{':
		ev, err = kyc(p, r.Body)
	case p.Type == "BUY" || p.Type == "SELL":
		ev, err = exchange(p)
	case strings.HasSuffix(p.Type, "_WITHDRAWAL") || strings.HasSuffix(p.Type, "_DEPOSIT"):
		ev, err = transfer(p)
	case p.Type != "":
		return nil, ingress.Unknown("unknown type %q", p.Type)
	case p.Error != "":
		ev, err = masterBalance(p, r.Body, r.Now)
	case len(p.ID) > 0 && p.State != "" && len(p.UserID) > 0:
		ev, err = bankAccount(p)
	default:
		return nil, ingress.Unknown("not a Kriptomat webhook this version knows")
	}
	if err != nil {
		return nil, err
	}
	ev.Raw = raw
	return ev, nil
}

// States of exchanges, withdrawals and deposits. The documentation lists
// SUCCESS, PENDING and ERROR and its own withdrawal example says SUCCESSFUL.
var transactionStates = map[string]string{
	"SUCCESS":    ingress.StatusSucceeded,
	"SUCCESSFUL": ingress.StatusSucceeded,
	"COMPLETED":  ingress.StatusSucceeded,
	"PENDING":    ingress.StatusPending,
	"PROCESSING": ingress.StatusPending,
	"ERROR":      ingress.StatusFailed,
	"FAILED":     ingress.StatusFailed,
	"CANCELLED":  ingress.StatusCancelled,
	"CANCELED":   ingress.StatusCancelled,
}

// Bank account states.
var accountStates = map[string]string{
	"VERIFIED":   ingress.StatusApproved,
	"PENDING":    ingress.StatusPending,
	"UNVERIFIED": ingress.StatusPending,
	"REJECTED":   ingress.StatusRejected,
	"DECLINED":   ingress.StatusRejected,
}

// rank orders a transaction's statuses: pending before any final one.
func rank(status string) int {
	if status == ingress.StatusPending {
		return 1
	}
	return 2
}

func state(table map[string]string, kind, s string) (string, error) {
	if s == "" {
		return "", ingress.Malformed("%s: missing state", kind)
	}
	st, ok := table[s]
	if !ok {
		return "", ingress.Unknown("%s: unknown state %q", kind, s)
	}
	return st, nil
}

func exchange(p *payload) (*ingress.Event, error) {
	id, err := ident("id", p.ID, true)
	if err != nil {
		return nil, err
	}
	status, err := state(transactionStates, "exchange", p.State)
	if err != nil {
		return nil, err
	}
	crypto, fiat, err := splitPair(p.Pair)
	if err != nil {
		return nil, err
	}
	typ := "exchange." + strings.ToLower(p.Type)
	ev := &ingress.Event{
		ID:      eventID(typ, id, p.State),
		Type:    typ,
		Status:  status,
		Details: map[string]any{"transaction_id": id, "pair": p.Pair, "provider_status": p.State},
	}
	track(ev, id)
	if ev.User, err = ident("user_id", p.UserID, false); err != nil {
		return nil, err
	}
	if ev.OccurredAt, err = optionalTime("date", p.Date); err != nil {
		return nil, err
	}
	ev.Amounts, err = amounts(
		field{"amount", p.Amount, crypto, true},
		field{"price", p.Price, fiat, false},
		field{"fee", p.Fee, fiat, false},
		field{"subtotal", p.Subtotal, fiat, false},
		field{"total", p.Total, fiat, false},
	)
	return ev, err
}

func transfer(p *payload) (*ingress.Event, error) {
	id, err := ident("id", p.ID, true)
	if err != nil {
		return nil, err
	}
	kind, medium := "withdrawal", "fiat"
	if strings.HasSuffix(p.Type, "_DEPOSIT") {
		kind = "deposit"
	}
	switch {
	case strings.HasPrefix(p.Type, "FIAT_"):
	case strings.HasPrefix(p.Type, "CRYPTO_"):
		medium = "crypto"
	default:
		return nil, ingress.Unknown("unknown type %q", p.Type)
	}
	status, err := state(transactionStates, kind, p.State)
	if err != nil {
		return nil, err
	}
	currency := strings.ToUpper(p.Currency)
	if currency == "" && medium == "fiat" {
		// Kriptomat's fiat side is the euro; its examples name no currency.
		currency = "EUR"
	}
	typ := kind + "." + medium
	ev := &ingress.Event{
		ID:      eventID(typ, id, p.State),
		Type:    typ,
		Status:  status,
		Details: map[string]any{"transaction_id": id, "provider_status": p.State},
	}
	track(ev, id)
	if ev.User, err = ident("user_id", p.UserID, true); err != nil {
		return nil, err
	}
	if ev.OccurredAt, err = optionalTime("date", p.Date); err != nil {
		return nil, err
	}
	ev.Amounts, err = amounts(
		field{"amount", p.Amount, currency, true},
		field{"deposited", p.Deposited, currency, false},
		field{"fee", p.BankFee, currency, false},
		field{"received", p.Received, currency, false},
	)
	return ev, err
}

func bankAccount(p *payload) (*ingress.Event, error) {
	id, err := ident("id", p.ID, true)
	if err != nil {
		return nil, err
	}
	status, err := state(accountStates, "bank account", p.State)
	if err != nil {
		return nil, err
	}
	ev := &ingress.Event{
		ID:      eventID("bank_account.status", id, p.State),
		Type:    "bank_account.status",
		Status:  status,
		Details: map[string]any{"account_id": id, "provider_status": p.State},
	}
	track(ev, id)
	ev.User, err = ident("user_id", p.UserID, true)
	return ev, err
}

func kyc(p *payload, body []byte) (*ingress.Event, error) {
	var st kycStatus
	if err := ingress.Decode(p.Status, &st); err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	user, err := ident("user_id", p.UserID, true)
	if err != nil {
		return nil, err
	}
	status, err := kycState(st)
	if err != nil {
		return nil, err
	}
	when := st.ReviewDate
	if when == "" {
		when = st.CreateDate
	}
	occurred, err := optionalTime("status.reviewDate", when)
	if err != nil {
		return nil, err
	}
	details := map[string]any{
		"review_status": st.ReviewStatus,
		"review_answer": st.ReviewResult.ReviewAnswer,
		"applicant_id":  st.ApplicantID,
	}
	if len(st.ReviewResult.RejectLabels) > 0 {
		details["reject_labels"] = st.ReviewResult.RejectLabels
	}
	if st.ReviewResult.ReviewRejectType != "" {
		details["reject_type"] = st.ReviewResult.ReviewRejectType
	}
	if st.ReviewResult.ClientComment != "" {
		details["client_comment"] = st.ReviewResult.ClientComment
	}
	if len(p.DocumentStatus) > 0 {
		docs := make([]map[string]any, 0, len(p.DocumentStatus))
		for _, d := range p.DocumentStatus {
			doc := map[string]any{"type": d.IDDocType, "review_answer": d.ReviewResult.ReviewAnswer}
			if len(d.ReviewResult.RejectLabels) > 0 {
				doc["reject_labels"] = d.ReviewResult.RejectLabels
			}
			docs = append(docs, doc)
		}
		details["documents"] = docs
	}
	return &ingress.Event{
		// A KYC notification carries no id of its own: the body names it,
		// but for the count of failed deliveries, which a retry raises.
		ID:         fmt.Sprintf("kriptomat:kyc.review:%s:%s", user, ingress.BodyHash(retryless(body))),
		Type:       "kyc.review",
		Status:     status,
		User:       user,
		OccurredAt: occurred,
		Details:    details,
	}, nil
}

// retryless returns a KYC body with its count of failed deliveries
// (status.notificationFailureCnt) blanked, so that a retry names the same
// event as the delivery that failed.
func retryless(body []byte) []byte {
	b, err := ingress.Rewrite(body, map[string]func(string) string{"notificationFailureCnt": func(string) string { return "" }})
	if err != nil {
		return body
	}
	return b
}

// kycState maps a KYC review (Sumsub's vocabulary: reviewStatus, and
// reviewAnswer GREEN/RED once completed) to an event status.
func kycState(st kycStatus) (string, error) {
	switch strings.ToLower(st.ReviewStatus) {
	case "completed":
		switch st.ReviewResult.ReviewAnswer {
		case "GREEN":
			return ingress.StatusApproved, nil
		case "RED":
			return ingress.StatusRejected, nil
		}
		return "", ingress.Unknown("kyc: unknown reviewAnswer %q", st.ReviewResult.ReviewAnswer)
	case "init", "pending", "queued", "prechecked", "onhold":
		return ingress.StatusPending, nil
	case "":
		return "", ingress.Malformed("kyc: missing status.reviewStatus")
	}
	return "", ingress.Unknown("kyc: unknown reviewStatus %q", st.ReviewStatus)
}

// balanceLow reads "BTC balance below 1.00" in an alert's message; the
// threshold may group its thousands ("1,000.50").
var balanceLow = regexp.MustCompile(`\b([A-Za-z0-9]+) balance below ([0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?)(,?[0-9])?`)

// masterBalance reads a master balance alert. Its body carries no id and
// no time, so a retry cannot be told from the same alert sent again later
// (the balance was topped up and ran low again): identical alerts received
// within the same hour (UTC) are one alert, and each hour's is published.
// A retry that straddles the hour shows twice, which costs less than an
// operator never seeing the second time the balance ran low.
func masterBalance(p *payload, body []byte, received time.Time) (*ingress.Event, error) {
	ev := &ingress.Event{
		ID:      "kriptomat:master_balance.low:" + ingress.BodyHash(body) + ":" + received.UTC().Format("2006-01-02T15"),
		Type:    "master_balance.low",
		Status:  ingress.StatusInfo,
		Route:   ingress.RouteAlertOnly,
		Details: map[string]any{"message": p.Error},
	}
	// A comma then digits that are no thousands group ("1,5", "0,0001")
	// could be a decimal comma: no threshold rather than a wrong one.
	if m := balanceLow.FindStringSubmatch(p.Error); m != nil && m[3] == "" {
		a, err := ingress.NewAmount("threshold", json.Number(strings.ReplaceAll(m[2], ",", "")), strings.ToUpper(m[1]))
		if err != nil {
			return nil, err
		}
		ev.Amounts = map[string]ingress.Amount{"threshold": a}
	}
	return ev, nil
}

// track names the transaction an event is a status of, for stale marking.
func track(ev *ingress.Event, id string) *ingress.Event {
	ev.Txn = "kriptomat:" + ev.Type + ":" + id
	ev.Rank = rank(ev.Status)
	return ev
}

// eventID names a Kriptomat event by (type, id, state): a status change of
// the same transaction is a new event, a retry is the same one. The type is
// part of it because Kriptomat's ids are per kind (its own examples give a
// buy and a sell the same id).
func eventID(typ, id, state string) string {
	return "kriptomat:" + typ + ":" + id + ":" + state
}

type field struct {
	name     string
	value    json.Number
	currency string
	required bool
}

func amounts(fields ...field) (map[string]ingress.Amount, error) {
	a := ingress.Amounts{}
	for _, f := range fields {
		if f.value == "" && f.required {
			return nil, ingress.Malformed("%s: missing amount", f.name)
		}
		if err := a.Add(f.name, f.value, f.currency); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// ident reads an id that Kriptomat sends as a number or a string.
func ident(name string, raw json.RawMessage, required bool) (string, error) {
	var v any
	if len(raw) > 0 {
		if err := ingress.Decode(raw, &v); err != nil {
			return "", err
		}
	}
	id, ok := ingress.IDString(v)
	if !ok {
		return "", ingress.Malformed("%s: want a string or an integer, got %.64s", name, raw)
	}
	if id == "" && required {
		return "", ingress.Malformed("%s: missing", name)
	}
	return id, nil
}

func optionalTime(name, s string) (string, error) {
	if s == "" {
		return "", nil
	}
	return ingress.ParseTime(name, s)
}

// splitPair splits a pair such as "btceur" into BTC and EUR: the quote is
// the fiat currency, three letters at the end; a separator before it
// ("BTC-EUR", "btc_eur", "BTC/EUR") is not part of the crypto currency,
// one inside it ("usdt_trc20eur") is.
func splitPair(pair string) (crypto, fiat string, err error) {
	if len(pair) >= 4 {
		crypto, fiat = strings.TrimRight(pair[:len(pair)-3], "-_/"), pair[len(pair)-3:]
	}
	if crypto == "" {
		return "", "", ingress.Malformed("pair: %.64q is not a currency pair", pair)
	}
	return strings.ToUpper(crypto), strings.ToUpper(fiat), nil
}
