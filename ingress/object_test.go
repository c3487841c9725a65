package ingress_test

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"herald/ingress"
)

// A numeric id is any integer, its digits kept as written: one beyond 64
// bits too. A fraction, an exponent or a number of absurd length is not.
func TestIDString_IntegersOfAnySize(t *testing.T) {
	for lit, ok := range map[string]bool{
		"7": true, "-3": true, "18446744073709551615": true, "340282366920938463463374607431768211455": true,
		"1.5": false, "1e3": false, "-": false, "1" + strings.Repeat("0", 60): false,
	} {
		id, got := ingress.IDString(json.Number(lit))
		if got != ok || ok && id != lit {
			t.Errorf("IDString(%s) = %q, %v; want %v", lit, id, got, ok)
		}
	}
}

func TestObject_LenientWhereProvidersAreLoose(t *testing.T) {
	o, err := ingress.DecodeObject([]byte(`{"n":7,"s":"7","f":1.5,"amt":"12.000","num":0.10,"blank":"","nil":null,"b":true,"o":{"x":1},"a":[1]}`))
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"n": "7", "s": "7", "blank": "", "nil": "", "missing": ""} {
		if got, err := o.ID(key); err != nil || got != want {
			t.Errorf("ID(%s) = %q, %v; want %q", key, got, err, want)
		}
	}
	for _, key := range []string{"f", "b", "o", "a"} {
		if _, err := o.ID(key); !errors.Is(err, ingress.ErrMalformed) {
			t.Errorf("ID(%s) accepted", key)
		}
	}
	if _, err := o.RequiredID("blank"); !errors.Is(err, ingress.ErrMalformed) {
		t.Error("RequiredID accepted an empty id")
	}
	for key, want := range map[string]string{"amt": "12.000", "num": "0.10", "blank": "", "nil": ""} {
		if got, err := o.Number(key); err != nil || string(got) != want {
			t.Errorf("Number(%s) = %q, %v; want %q", key, got, err, want)
		}
	}
	if _, err := o.Number("b"); !errors.Is(err, ingress.ErrMalformed) {
		t.Error("Number accepted a boolean")
	}
	if s, err := o.String("n"); err != nil || s != "7" {
		t.Errorf("String of a number: %q %v", s, err)
	}
	if _, err := o.String("o"); !errors.Is(err, ingress.ErrMalformed) {
		t.Error("String accepted an object")
	}
	if sub, err := o.Object("o"); err != nil || !sub.Has("x") {
		t.Errorf("Object: %v %v", sub, err)
	}
	if _, err := o.Object("a"); !errors.Is(err, ingress.ErrMalformed) {
		t.Error("Object accepted an array")
	}
	if o.Has("nil") || o.Has("missing") || !o.Has("b") {
		t.Error("Has is wrong about null, missing or present members")
	}
	if _, err := o.RequiredObject("missing"); !errors.Is(err, ingress.ErrMalformed) {
		t.Error("RequiredObject accepted a missing member")
	}
	details := map[string]any{}
	o.CopyTo(details, "s", "seven", "blank", "blank", "nil", "nil", "missing", "missing")
	o.CopyRest(details, map[string]bool{"o": true, "a": true, "amt": true, "num": true, "f": true, "b": true, "blank": true})
	if len(details) != 3 || details["seven"] != "7" || details["s"] != "7" || details["n"] != json.Number("7") {
		t.Errorf("copied %v", details)
	}
	camel, _ := ingress.DecodeObject([]byte(`{"parentExternalId":1}`))
	camel.CopyRest(details, nil)
	if details["parent_external_id"] != json.Number("1") {
		t.Errorf("snake_case: %v", details)
	}
	for _, body := range []string{`null`, `[1]`, `"x"`, `{"a":1} x`} {
		if _, err := ingress.DecodeObject([]byte(body)); !errors.Is(err, ingress.ErrMalformed) {
			t.Errorf("DecodeObject(%s) accepted", body)
		}
	}
}

func TestAmounts_KeepDigitsAndSkipAbsent(t *testing.T) {
	o, _ := ingress.DecodeObject([]byte(`{"a":"100.00","b":1.000,"bad":"ten"}`))
	a := ingress.Amounts{}
	if err := a.Take("a", o, "a", "eur"); err != nil {
		t.Fatal(err)
	}
	if err := a.Take("b", o, "b", "BTC"); err != nil {
		t.Fatal(err)
	}
	if err := a.Take("none", o, "missing", "EUR"); err != nil {
		t.Fatal(err)
	}
	if a["a"] != (ingress.Amount{Value: "100.00", Currency: "EUR"}) || a["b"].Value != "1.000" || len(a) != 2 {
		t.Fatalf("%+v", a)
	}
	if err := a.Take("bad", o, "bad", "EUR"); !errors.Is(err, ingress.ErrMalformed) {
		t.Fatal("a word was accepted as an amount")
	}
}

func TestVerifyHex(t *testing.T) {
	body := []byte(`{"examplePayload":true}`)
	// Coinify's published test vector.
	const want = "bcdbb89e3031905f3cc1a20d16b5f969a17a7d8fa0c26e4a807c2193402d66f4"
	if got := ingress.SignHex(sha256.New, "my-shared-secret", body); got != want {
		t.Fatalf("SignHex = %s", got)
	}
	if err := ingress.VerifyHex(sha256.New, "my-shared-secret", strings.ToUpper(want), body); err != nil {
		t.Fatalf("upper-case hex refused: %v", err)
	}
	for name, sig := range map[string]string{"wrong": strings.Replace(want, "b", "c", 1), "not hex": "zz", "sha512": ingress.SignHex(sha512.New, "my-shared-secret", body)} {
		if err := ingress.VerifyHex(sha256.New, "my-shared-secret", sig, body); !errors.Is(err, ingress.ErrSignature) {
			t.Errorf("%s signature accepted: %v", name, err)
		}
	}
	r := &ingress.Request{Header: http.Header{}, Body: body, Config: ingress.Config{Secret: "my-shared-secret"}}
	if err := ingress.VerifyHeader(r, "X-Sig", sha256.New, r.Body); err == nil || !strings.Contains(err.Error(), "X-Sig") {
		t.Fatalf("missing header: %v", err)
	}
	r.Header.Set("X-Sig", want)
	if err := ingress.VerifyHeader(r, "X-Sig", sha256.New, r.Body); err != nil {
		t.Fatal(err)
	}
}

func TestRedact(t *testing.T) {
	fields := map[string]func(string) string{"code": ingress.Hide, "to": ingress.MaskCard}
	for in, want := range map[string]string{
		// Valid JSON: rewritten, numbers included.
		`{"code": 123456, "to": "4111111111111111", "n": 1.50}`: `{"code":"[redacted]","to":"411111******1111","n":1.50}`,
		`{"x":[{"code":"987654"}]}`:                             `{"x":[{"code":"[redacted]"}]}`,
		// Not JSON: redacted textually, even cut short.
		`{"code": "123456", "to": 4111111111111111,}`: `{"code":"[redacted]", "to":"411111******1111",}`,
		`{"code": "1234`: `{"code":"[redacted]"`,
	} {
		if got := string(ingress.Redact([]byte(in), fields)); got != want {
			t.Errorf("Redact(%s)\n got %s\nwant %s", in, got, want)
		}
	}
}
