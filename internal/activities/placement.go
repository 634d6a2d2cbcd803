package activities

import (
	"context"
	"errors"
	"fmt"

	"github.com/toygres/toygres/duroxide"
)

// ErrOtherHost is returned (wrapped, not retried) by the data-plane
// activities for an instance that runs on another host than this server's
// (Deps.Host): that server alone can reach it, and "not on this machine"
// must never pass for "does not exist".
var ErrOtherHost = errors.New("instance runs on another host")

// checkHost makes sure an instance's data-plane calls happen on the host
// that runs it. With claim (deploy) the instance is first recorded for this
// host unless another host is recorded already. Instances without a
// recorded host (created before hosts were recorded) pass.
func (a *acts) checkHost(ctx context.Context, internalName string, claim bool) error {
	if a.Host == "" {
		return nil
	}
	var host string
	var err error
	if claim {
		host, err = a.CMS.ClaimPlacement(ctx, internalName, a.Host)
	} else {
		host, err = a.CMS.Placement(ctx, internalName)
	}
	if err != nil {
		return fmt.Errorf("read the host of %s: %w", internalName, err)
	}
	if host != "" && host != a.Host {
		return duroxide.NonRetryable(fmt.Errorf("%w: %s runs on %s, this server on %s; only a server there can manage it",
			ErrOtherHost, internalName, host, a.Host))
	}
	return nil
}
