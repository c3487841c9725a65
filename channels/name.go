package channels

import (
	"errors"
	"fmt"
	"strings"
)

// The namespaces herald knows. Each carries a different audience: an end
// user, a merchant (tenant), or the merchant's operations screen.
const (
	NamespaceUser     = "user"
	NamespaceMerchant = "merchant"
	NamespaceAlerts   = "alerts"
)

// MaxIDLength is the longest id a channel name may carry.
const MaxIDLength = 128

// ErrBadName is wrapped by every error Parse returns.
var ErrBadName = errors.New("bad channel name")

// Name is a parsed, valid channel name.
type Name struct {
	Namespace string
	ID        string
}

// String returns the channel in its wire form, "namespace:id".
func (n Name) String() string { return n.Namespace + ":" + n.ID }

// Parse validates a channel name. Names are never normalised: anything that
// is not exactly "namespace:id" with a known namespace and an id of
// [A-Za-z0-9._@:-]{1,128} is rejected.
func Parse(s string) (Name, error) {
	ns, id, ok := strings.Cut(s, ":")
	if !ok {
		return Name{}, fmt.Errorf("%w: %q is not namespace:id", ErrBadName, truncate(s))
	}
	switch ns {
	case NamespaceUser, NamespaceMerchant, NamespaceAlerts:
	default:
		return Name{}, fmt.Errorf("%w: unknown namespace %q (want user, merchant or alerts)", ErrBadName, truncate(ns))
	}
	if err := ValidID(id); err != nil {
		return Name{}, fmt.Errorf("%w: %v", ErrBadName, err)
	}
	return Name{Namespace: ns, ID: id}, nil
}

// ValidID reports whether id may follow a namespace: 1 to 128 characters of
// [A-Za-z0-9._@:-].
func ValidID(id string) error {
	if id == "" {
		return errors.New("empty id")
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("id longer than %d characters", MaxIDLength)
	}
	for i := 0; i < len(id); i++ {
		if !idByte(id[i]) {
			return fmt.Errorf("id %q has %q; allowed are letters, digits and . _ @ : -", truncate(id), id[i])
		}
	}
	return nil
}

func idByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '.', '_', '@', ':', '-':
		return true
	}
	return false
}

// truncate keeps hostile input from growing error messages without bound.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
