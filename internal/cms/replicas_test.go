package cms

import "testing"

func testReplicas(t *testing.T, newDB factory) {
	s := newStore(t, newDB)
	ctx := ctxT(t)
	inst := mustCreate(t, s, spec("rep", "00000001"))
	if r, err := s.Replicas(ctx, inst.InternalName); err != nil || r != (Replicas{}) {
		t.Fatalf("Replicas of an instance without a record = %+v, %v; want zero", r, err)
	}
	if err := s.SetReplicaCount(ctx, inst.InternalName, 2, true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetReplicaCount(ctx, inst.InternalName, -1, false); err == nil {
		t.Fatal("a negative count was accepted")
	}
	ro := "postgresql://postgres@127.0.0.1:5434,127.0.0.1:5433/postgres?target_session_attrs=prefer-standby"
	if err := s.SetReplicaEndpoint(ctx, inst.InternalName, "1", ro); err != nil {
		t.Fatal(err)
	}
	if err := s.SetReplicaEndpoint(ctx, inst.InternalName, "1", "postgresql://postgres:secret@127.0.0.1:5434/postgres"); err == nil {
		t.Fatal("a read-only connection string with a password was stored")
	}
	want := Replicas{Replicas: 2, Sync: true, ReadOnlyConnectionString: ro, Primary: "1"}
	if r, err := s.Replicas(ctx, inst.InternalName); err != nil || r != want {
		t.Fatalf("Replicas = %+v, %v; want %+v", r, err, want)
	}
	// Scaling keeps the endpoint; racing callers from the same number
	// agree on the next one.
	if err := s.SetReplicaCount(ctx, inst.InternalName, 0, false); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if n, err := s.NextFailoverSeq(ctx, inst.InternalName, 0); err != nil || n != 1 {
			t.Fatalf("NextFailoverSeq(0) call %d = %d, %v; want 1", i, n, err)
		}
	}
	if n, err := s.NextFailoverSeq(ctx, inst.InternalName, 1); err != nil || n != 2 {
		t.Fatalf("NextFailoverSeq(1) = %d, %v; want 2", n, err)
	}
	want = Replicas{ReadOnlyConnectionString: ro, Primary: "1", FailoverSeq: 2}
	if r, _ := s.Replicas(ctx, inst.InternalName); r != want {
		t.Fatalf("Replicas = %+v; want %+v", r, want)
	}
	// A record made by NextFailoverSeq alone has no standbys.
	if n, err := s.NextFailoverSeq(ctx, "other-00000002", 0); err != nil || n != 1 {
		t.Fatalf("NextFailoverSeq of a new record = %d, %v", n, err)
	}
	if r, _ := s.Replicas(ctx, "other-00000002"); r != (Replicas{FailoverSeq: 1}) {
		t.Fatalf("Replicas = %+v", r)
	}
	// Purge removes the record with the instance.
	mustState(t, s, inst.InternalName, StateFailed, StateUpdate{})
	if err := s.Purge(ctx, inst.InternalName); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Replicas(ctx, inst.InternalName); r != (Replicas{}) {
		t.Fatalf("Replicas after purge = %+v", r)
	}
}
