package ingress

import (
	"encoding/json"
	"strings"
	"unicode"
)

// Object is one JSON object of a webhook, decoded with numbers kept as
// json.Number. Its accessors are lenient where providers are loose (an id
// sent as a number or a string, an amount as a number or a numeric string)
// and strict otherwise: a member of the wrong kind is ErrMalformed naming
// the member. Adapters whose payloads have no fixed shape (one provider,
// many webhooks; fields that change type between events) read them
// through Object rather than through structs that would refuse a whole
// body for one unexpected member.
type Object map[string]any

// DecodeObject decodes body, which must be exactly one JSON object.
func DecodeObject(body []byte) (Object, error) {
	var m map[string]any
	if err := Decode(body, &m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, Malformed("not a JSON object")
	}
	return Object(m), nil
}

// Has reports whether key is present and not null.
func (o Object) Has(key string) bool {
	v, ok := o[key]
	return ok && v != nil
}

// Object returns the member key as an object, nil when it is absent or
// null.
func (o Object) Object(key string) (Object, error) {
	switch v := o[key].(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return Object(v), nil
	}
	return nil, Malformed("%s: want an object", key)
}

// RequiredObject is Object for a member that must be present.
func (o Object) RequiredObject(key string) (Object, error) {
	sub, err := o.Object(key)
	if err == nil && sub == nil {
		err = Malformed("%s: missing", key)
	}
	return sub, err
}

// Array returns the member key as an array, nil when it is absent or null.
func (o Object) Array(key string) ([]any, error) {
	switch v := o[key].(type) {
	case nil:
		return nil, nil
	case []any:
		return v, nil
	}
	return nil, Malformed("%s: want an array", key)
}

// String returns a string member, or a number's literal; "" when the
// member is absent or null.
func (o Object) String(key string) (string, error) {
	switch v := o[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	}
	return "", Malformed("%s: want a string", key)
}

// RequiredString is String for a member that must be present and not
// empty.
func (o Object) RequiredString(key string) (string, error) {
	s, err := o.String(key)
	if err == nil && s == "" {
		err = Malformed("%s: missing", key)
	}
	return s, err
}

// ID returns an identifier sent as a string or an integer; "" when the
// member is absent, null or empty.
func (o Object) ID(key string) (string, error) {
	id, ok := IDString(o[key])
	if !ok {
		return "", Malformed("%s: want a string or an integer, got %s", key, describe(o[key]))
	}
	return id, nil
}

// RequiredID is ID for a member that must be present.
func (o Object) RequiredID(key string) (string, error) {
	id, err := o.ID(key)
	if err == nil && id == "" {
		err = Malformed("%s: missing", key)
	}
	return id, err
}

// IDString reads an identifier decoded with UseNumber: a string, or a
// number that is an integer, of any size (its digits are kept as written:
// an id beyond 64 bits is still an id). nil and "" read as "" (absent);
// anything else is not an identifier (ok false).
func IDString(v any) (id string, ok bool) {
	switch v := v.(type) {
	case nil:
		return "", true
	case string:
		return v, true
	case json.Number:
		digits := strings.TrimPrefix(v.String(), "-")
		if digits != "" && len(digits) <= maxIDDigits && strings.Trim(digits, "0123456789") == "" {
			return v.String(), true
		}
	}
	return "", false
}

// maxIDDigits bounds a numeric id: 40 digits is well past 128 bits.
const maxIDDigits = 40

// Number returns an amount sent as a JSON number or as a string holding
// one, exactly as written; "" when the member is absent, null or an empty
// string. The value is not validated: Amounts.Add does that.
func (o Object) Number(key string) (json.Number, error) {
	switch v := o[key].(type) {
	case nil:
		return "", nil
	case json.Number:
		return v, nil
	case string:
		return json.Number(strings.TrimSpace(v)), nil
	}
	return "", Malformed("%s: want a number, got %s", key, describe(o[key]))
}

// Time returns a timestamp member normalized by ParseTime, "" when absent.
func (o Object) Time(key string) (string, error) {
	s, err := o.String(key)
	if err != nil || s == "" {
		return "", err
	}
	return ParseTime(key, s)
}

// CopyTo copies members of o into details under other names, given as
// pairs (member, detail name). Absent, null and empty members are skipped;
// values keep their JSON kind (numbers their literal). A nil o copies
// nothing.
func (o Object) CopyTo(details map[string]any, pairs ...string) {
	for i := 0; i+1 < len(pairs); i += 2 {
		if v := o[pairs[i]]; v != nil && v != "" {
			details[pairs[i+1]] = v
		}
	}
}

// CopyRest copies every member of o that is not null and not in skip
// into details, named in snake_case (parentExternalId →
// parent_external_id): for payloads whose members are documented one by
// one and all worth showing.
func (o Object) CopyRest(details map[string]any, skip map[string]bool) {
	for k, v := range o {
		if !skip[k] && v != nil {
			details[snake(k)] = v
		}
	}
}

func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Amounts are an event's sums of money by name.
type Amounts map[string]Amount

// Add validates n (see NewAmount) and keeps it under name with its
// currency, upper-cased. An empty n, a sum the provider did not send,
// adds nothing.
func (a Amounts) Add(name string, n json.Number, currency string) error {
	if n == "" {
		return nil
	}
	am, err := NewAmount(name, n, strings.ToUpper(strings.TrimSpace(currency)))
	if err != nil {
		return err
	}
	a[name] = am
	return nil
}

// Take adds the member key of o under name (see Add).
func (a Amounts) Take(name string, o Object, key, currency string) error {
	n, err := o.Number(key)
	if err != nil {
		return err
	}
	return a.Add(name, n, currency)
}

// describe names the kind of a decoded JSON value for error messages,
// without echoing it (it could be anything, a secret included).
func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "a value"
}
