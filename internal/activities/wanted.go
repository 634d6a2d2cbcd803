package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/toygres/toygres/duroxide"
	"github.com/toygres/toygres/internal/cms"
)

// ErrDeletedWhileCreating is returned (wrapped, not retried) by deploy and
// restore for an instance whose delete was requested before or while they
// ran: what they made is removed again.
var ErrDeletedWhileCreating = errors.New("instance was deleted while it was being created")

// wantedCheckTimeout bounds the check and cleanup that follow a deploy. They
// run even when the activity's context was cancelled: a cancellation that
// came too late to stop the deploy must not also stop its cleanup.
const wantedCheckTimeout = 2 * time.Minute

// deployWanted runs create, which creates the instance's data-plane resources,
// for an instance that is still wanted, and removes what it made when the
// instance stopped being wanted meanwhile.
//
// Deleting an instance still being created cancels its create and waits for
// it to end before removing resources, but a cancellation cannot stop a
// deploy already under way: the delete could find nothing to remove and the
// deploy create the instance just after. The delete marks the instance
// deleting before it removes resources, and this check runs after create
// returns (successfully or not: a deploy cut short leaves resources too), so
// one of the two removes them whichever finishes last.
func (a *acts) deployWanted(ctx context.Context, name string, create func(context.Context) error) error {
	made := a.wanted(ctx, name)
	switch {
	case made == nil:
		made = create(ctx)
	case !errors.Is(made, ErrDeletedWhileCreating):
		return made
	}
	// An earlier attempt may have made resources even when this one did not.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wantedCheckTimeout)
	defer cancel()
	gone := a.wanted(cctx, name)
	if !errors.Is(gone, ErrDeletedWhileCreating) {
		if made != nil {
			return made
		}
		return gone // nil, or the check failed: the retry deploys (a no-op) and checks again
	}
	if err := a.Driver.Delete(cctx, name); err != nil {
		// Retried while the create runs; after a cancelled create the next
		// start of the server removes them (see the app's removeDeletedLeftovers).
		return fmt.Errorf("%s was deleted while it was being created; removing its resources failed: %w", name, err)
	}
	if made == nil || !errors.Is(made, ErrDeletedWhileCreating) {
		a.Logger.WarnContext(ctx, "instance deleted while it was being created; removed what its deploy made", "internal_name", name)
	}
	return gone
}

// wanted fails with ErrDeletedWhileCreating (not retried) once the
// instance's delete was requested; if its record is gone, it counts as
// deleted. Any other state is wanted: a failed instance's create can be
// recreated (see the API's recreate), which deploys again.
func (a *acts) wanted(ctx context.Context, name string) error {
	inst, err := a.CMS.GetByInternalName(ctx, name)
	switch {
	case errors.Is(err, cms.ErrNotFound):
		return duroxide.NonRetryable(fmt.Errorf("%w: %s has no record", ErrDeletedWhileCreating, name))
	case err != nil:
		return fmt.Errorf("check that %s is still wanted: %w", name, err)
	case inst.State == cms.StateDeleting || inst.State == cms.StateDeleted:
		return duroxide.NonRetryable(fmt.Errorf("%w: %s is %s", ErrDeletedWhileCreating, name, inst.State))
	}
	return nil
}
