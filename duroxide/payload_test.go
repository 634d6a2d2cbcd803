package duroxide

import (
	"encoding/json"
	"testing"
)

// The integer fast paths of encodePayload and decodePayload must agree with
// encoding/json on every input, valid or not.
func TestPayloadIntegersAsJSON(t *testing.T) {
	inputs := []string{"0", "-0", "7", "-42", "9223372036854775807", "-9223372036854775808",
		"9223372036854775808", "01", "+1", "1e3", "1.0", " 1", "1 ", "-", "null", `"1"`, "true", "--1", "0x10"}
	for _, in := range inputs {
		var got, want int
		gotErr, wantErr := decodePayload(in, &got), json.Unmarshal([]byte(in), &want)
		if (gotErr != nil) != (wantErr != nil) || got != want {
			t.Errorf("int %q: decodePayload = %d, %v; json = %d, %v", in, got, gotErr, want, wantErr)
		}
		var got64, want64 int64
		gotErr, wantErr = decodePayload(in, &got64), json.Unmarshal([]byte(in), &want64)
		if (gotErr != nil) != (wantErr != nil) || got64 != want64 {
			t.Errorf("int64 %q: decodePayload = %d, %v; json = %d, %v", in, got64, gotErr, want64, wantErr)
		}
	}
	for _, v := range []any{0, -1, 1 << 40, int64(-1 << 62), true, false} {
		got, err := encodePayload(v)
		want, _ := json.Marshal(v)
		if err != nil || got != string(want) {
			t.Errorf("encodePayload(%v) = %q, %v; json = %s", v, got, err, want)
		}
	}
}
