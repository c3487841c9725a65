package channels

import "slices"

// Grants is what one token may subscribe to:
//   - user:<sub>, always;
//   - merchant:<m> and alerts:<m> when the token names merchant m;
//   - every channel listed exactly in the token's "channels" claim.
//
// Nothing else. The zero value grants nothing.
type Grants struct {
	Subject  string
	Merchant string
	Channels []string
}

// Allows reports whether channel (already validated by Parse) is granted.
func (g Grants) Allows(channel string) bool {
	if g.Subject != "" && channel == NamespaceUser+":"+g.Subject {
		return true
	}
	if g.Merchant != "" && (channel == NamespaceMerchant+":"+g.Merchant || channel == NamespaceAlerts+":"+g.Merchant) {
		return true
	}
	return slices.Contains(g.Channels, channel)
}

// List returns the valid channel names the grants cover, in a stable order:
// the user channel, the merchant's two channels, then the listed ones. Names
// in the grants that are not valid channels (a subject with a space, say) are
// left out, since nothing could be subscribed under them.
func (g Grants) List() []string {
	var out []string
	add := func(ch string) {
		if _, err := Parse(ch); err == nil && !slices.Contains(out, ch) {
			out = append(out, ch)
		}
	}
	if g.Subject != "" {
		add(NamespaceUser + ":" + g.Subject)
	}
	if g.Merchant != "" {
		add(NamespaceMerchant + ":" + g.Merchant)
		add(NamespaceAlerts + ":" + g.Merchant)
	}
	for _, ch := range g.Channels {
		add(ch)
	}
	return out
}
