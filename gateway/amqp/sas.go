package amqp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// SAS signs in with a shared access signature, as Azure IoT Hub's service
// endpoint takes over SASL PLAIN: user KEYNAME@sas.root.HUB, password a
// token "SharedAccessSignature sr=RESOURCE&sig=...&se=EXPIRY&skn=KEYNAME",
// whose signature is the base64 HMAC-SHA256, under the decoded key, of the
// URL-encoded resource, a newline and the expiry in Unix seconds (Azure's
// documented scheme for IoT Hub security tokens). A fresh token is made for
// every connection.
type SAS struct {
	// Resource is what the token grants access to: the hub's host name
	// (HUB.azure-devices.net).
	Resource string
	// KeyName is the shared access policy (iothubowner, service).
	KeyName string
	// Key is the policy's key, base64 as the portal shows it.
	Key string
	// TTL is how long each token is valid.
	TTL time.Duration

	now func() time.Time // the clock tokens are signed by; nil: time.Now
}

// clock returns the time to sign a token at.
func (s SAS) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// credentials returns the SASL PLAIN user and password for a connection
// made at now.
func (s SAS) credentials(now time.Time) (user, password string, err error) {
	key, err := base64.StdEncoding.DecodeString(s.Key)
	if err != nil {
		return "", "", fmt.Errorf("shared access key of %s: not base64: %w", s.KeyName, err)
	}
	hub, _, _ := strings.Cut(s.Resource, ".")
	return s.KeyName + "@sas.root." + hub, sasToken(s.Resource, s.KeyName, key, now.Add(s.TTL)), nil
}

// sasToken signs a token for resource that expires at expiry.
func sasToken(resource, keyName string, key []byte, expiry time.Time) string {
	sr := url.QueryEscape(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(sr + "\n" + se))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se + "&skn=" + url.QueryEscape(keyName)
}

// ParseIoTHubConnectionString reads an IoT Hub service connection string,
// HostName=HUB.azure-devices.net;SharedAccessKeyName=NAME;SharedAccessKey=KEY
// (the hub's "Shared access policies" page; the policy needs the service
// connect permission), into the SAS it signs in with.
func ParseIoTHubConnectionString(s string) (SAS, error) {
	out := SAS{TTL: time.Hour}
	for part := range strings.SplitSeq(s, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			if strings.TrimSpace(part) == "" {
				continue
			}
			return SAS{}, fmt.Errorf("iot hub connection string: %q is not NAME=VALUE", redactKey(part))
		}
		switch k {
		case "HostName":
			out.Resource = v
		case "SharedAccessKeyName":
			out.KeyName = v
		case "SharedAccessKey":
			out.Key = v
		}
	}
	if out.Resource == "" || out.KeyName == "" || out.Key == "" {
		return SAS{}, errors.New("iot hub connection string: want HostName=HUB.azure-devices.net;SharedAccessKeyName=NAME;SharedAccessKey=KEY (the hub's Shared access policies page)")
	}
	if _, err := base64.StdEncoding.DecodeString(out.Key); err != nil {
		return SAS{}, errors.New("iot hub connection string: SharedAccessKey is not base64: copy it whole from the hub's Shared access policies page")
	}
	return out, nil
}

// redactKey hides the value of a SharedAccessKey part.
func redactKey(part string) string {
	if strings.HasPrefix(strings.TrimSpace(part), "SharedAccessKey") {
		return "SharedAccessKey…"
	}
	return part
}
