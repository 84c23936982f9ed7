/*
 * The campaign redemption protocol of PromoCodeService, model-checked with spin (issue 14).
 *
 * What it models: one code that belongs to one campaign, one user, two concurrent redemptions
 * of that user (redemption ids 0 and 1, same code, same campaign), one Release (of id 0 or 1,
 * chosen at its start: it may come before that id's usage is written, which leaves the VOIDED
 * tombstone), and the sweep, which may resolve any reservation at any moment, also while the
 * request that made it is still running, and may itself stop after any step (a new sweep run
 * starts over). A redemption or a release may crash before every step (CRASH): it stops, and
 * what it reserved stays until the sweep settles it. Each MongoDB single-document write is one
 * atomic step, its filter evaluated atomically with its update; reads are separate steps.
 *
 * The protocol is the one of services/promocodes/README.md, "Campaigns" (the redemption steps
 * of today's code, plus the campaign's, in the order the README gives):
 *   1. reserve on the campaign   2. reserve on the code   3. write the usage holding the
 *   code's per-user slot and a campaign slot (unique indexes)   4. settle the code, then the
 *   campaign (finalize; or compensate both when no slot was free, or the id was voided).
 * The sweep decides every reservation on the usage after fencing the attempt out of it
 * (fence_redeem / fence_release), and settles the code first, then the campaign.
 * Each step names, in a comment, the function (and file) it stands for; paths are relative to
 * services/promocodes/src/promocodes_service/. The campaign's functions (reserve, begin_release,
 * settle of adapters/mongo_campaigns.py) mirror the code's of adapters/mongo_codes.py.
 *
 * What is checked (services/promocodes/tests/unit/test_campaign_model.py runs it exhaustively):
 *   - in every state (INVARIANT, asserted after every write): the code's and the campaign's
 *     uses and discount granted never exceed their max_uses and budget; the ACTIVE usages never
 *     exceed any limit (code, campaign, per user of the code and of the campaign, budgets); the
 *     counters never count fewer uses or less discount than the ACTIVE usages hold (so a limit
 *     on the counter is a limit on what is granted);
 *   - every resolution of the sweep removes the reservation it resolved;
 *   - at the end (all requests finished or crashed, the sweep run until nothing is pending):
 *     nothing is pending on the code or the campaign, and both counters (uses and discount)
 *     equal the ACTIVE usages exactly: nothing leaked, nothing given back twice;
 *   - no state where a process is blocked (spin's invalid end states).
 * The limits come in three configurations, one branch of the search each (init): every limit 1
 * (all bind at once), only the campaign's per-user slot binding, only the campaign's budget.
 *
 * Not modelled: retries of a redemption id by its caller (a new attempt of the same id: the
 * take-over of a fenced ABANDONED placeholder is in claim, but no process makes one), waiting
 * for in-flight reservations before answering "exhausted" (it only delays an answer), the
 * clock (every reservation counts as stale to the sweep at once: stronger than the real sweep).
 *
 * Switches (spin -D...): LIMITS=code_uses,campaign_uses,code_per_user,campaign_per_user,
 * code_budget,campaign_budget (one configuration instead of the three); RELEASE_CODE_FIRST
 * (begin_release on the code before the campaign, instead of the campaign first as the
 * redemption reserves); SWEEPERS=2 (two sweeps at once, e.g. two replicas, or a Redeem settling
 * an overdue reservation through Sweeper.resolve while the sweep runs). Two deliberate bugs,
 * each of which spin must catch:
 *   BUG_UNFENCED_CAMPAIGN: the sweep settles a campaign reservation by reading the usage
 *     without fencing the attempt out first (a live request then writes its usage after the
 *     campaign's use was given back: granted above the campaign's counter);
 *   BUG_CAMPAIGN_SETTLED_EARLY: the redemption finalizes the campaign before its usage decides
 *     (a refused slot or a crash then leaves a campaign use that no usage holds).
 */

/* The limits, one configuration per search branch (init): each makes another limit the binding
 * one. Discounts: redemption 0 grants 1, redemption 1 grants 2 (so a budget can bind alone). */
typedef Limits {
    byte code_max_uses;
    byte campaign_max_uses;
    byte code_per_user;          /* the code's max_uses_per_user */
    byte campaign_per_user;      /* the campaign's max_uses_per_user */
    byte code_budget;
    byte campaign_budget
};
Limits limit;
#define CODE_MAX_USES limit.code_max_uses
#define CAMPAIGN_MAX_USES limit.campaign_max_uses
#define CODE_PER_USER limit.code_per_user
#define CAMPAIGN_PER_USER limit.campaign_per_user
#define CODE_BUDGET limit.code_budget
#define CAMPAIGN_BUDGET limit.campaign_budget

inline set_limits(code_uses, campaign_uses, code_user, campaign_user, code_money, campaign_money) {
    limit.code_max_uses = code_uses;
    limit.campaign_max_uses = campaign_uses;
    limit.code_per_user = code_user;
    limit.campaign_per_user = campaign_user;
    limit.code_budget = code_money;
    limit.campaign_budget = campaign_money
}

/* The order of the release's two reservations: the campaign first, as the redemption reserves
 * (-DRELEASE_CODE_FIRST checks the other order). */
#ifdef RELEASE_CODE_FIRST
#define RELEASE_ORDER true
#else
#define RELEASE_ORDER false
#endif
#ifndef SWEEPERS
#define SWEEPERS 1
#endif

#define NR 2                 /* redemption ids 0 and 1 */
#define DISC(r) ((r) + 1)    /* the discount of redemption r */

/* Usage statuses (domain/model.py); NONE: no document under that _id. */
#define NONE 0
#define ABANDONED 1
#define ACTIVE 2
#define RELEASED 3
#define VOIDED 4

/* Reservation kinds (Reservation.kind). */
#define REDEEM 1
#define RELEASE 2

/* Attempt ids: redemption r uses attempt r + 1; the release draws 3, then 4 (a new attempt
 * per pass, as Redemptions.release draws one with new_id); 0 = none. */
#define FIRST_RELEASE_ATTEMPT 3
#define RELEASE_ATTEMPTS 2
#define BIT(a) (1 << (a))

/* Outcomes of UsageRepository.claim (domain/ports.py). */
#define CLAIMED 1
#define SLOT_TAKEN 2
#define EXISTS 3
#define FENCED 4

typedef Reservation {        /* pending.<rid> = {attempt, kind, ...} */
    byte attempt;
    byte kind
};

typedef Counted {            /* the code's or the campaign's document */
    byte uses;
    byte granted;            /* discount_granted */
    Reservation pending[NR]
};

typedef UsageDoc {           /* promo_code_usages, _id = redemption id */
    byte status;
    byte attempt;
    byte aborted;            /* aborted.<attempt>, as a bit set */
    byte released_by;
    byte slot;               /* the code's per-user slot; 0 = a string key ("r:<rid>", ...) */
    byte campaign_slot;      /* the campaign's per-user slot; 0 = a string key */
};

Counted code;
Counted campaign;
UsageDoc usage[NR];
byte finished;               /* ghost: requests finished or crashed (of 3) */

#define HOLDS(r) (usage[r].status == ACTIVE)
#define ACTIVE_USES (HOLDS(0) + HOLDS(1))
#define ACTIVE_DISCOUNT (HOLDS(0) * DISC(0) + HOLDS(1) * DISC(1))
#define PENDING(doc) (doc.pending[0].attempt != 0 || doc.pending[1].attempt != 0)

#define INVARIANT \
    assert(code.uses <= CODE_MAX_USES && campaign.uses <= CAMPAIGN_MAX_USES); \
    assert(code.granted <= CODE_BUDGET && campaign.granted <= CAMPAIGN_BUDGET); \
    assert(ACTIVE_USES <= CODE_MAX_USES && ACTIVE_USES <= CAMPAIGN_MAX_USES); \
    assert(ACTIVE_USES <= CODE_PER_USER && ACTIVE_USES <= CAMPAIGN_PER_USER); \
    assert(ACTIVE_DISCOUNT <= CODE_BUDGET && ACTIVE_DISCOUNT <= CAMPAIGN_BUDGET); \
    assert(code.uses >= ACTIVE_USES && campaign.uses >= ACTIVE_USES); \
    assert(code.granted >= ACTIVE_DISCOUNT && campaign.granted >= ACTIVE_DISCOUNT)

/* A request may crash before any step: it stops, leaving what it reserved to the sweep. */
#define CRASH if :: goto crashed :: skip fi

/* settle(doc, rid, attempt, give_back): $unset pending.<rid> filtered on the attempt, and with
 * a give-back also $inc uses -1, discount_granted -give_back (0 here = None: finalize).
 * adapters/mongo_codes.py MongoPromoCodeRepository.settle; the campaign's settle mirrors it. */
inline settle(doc, r, a, give_back) {
    atomic {
        if
        :: doc.pending[r].attempt == a ->
            doc.pending[r].attempt = 0;
            doc.pending[r].kind = 0;
            if
            :: give_back > 0 -> doc.uses = doc.uses - 1; doc.granted = doc.granted - give_back
            :: else -> skip
            fi;
            INVARIANT
        :: else -> skip
        fi
    }
}

/* reserve(doc, rid, ...): one update_one filtered on uses < max_uses, discount_granted <=
 * budget - discount, pending.<rid> absent; $inc the counters, $set pending.<rid>.
 * adapters/mongo_codes.py MongoPromoCodeRepository.reserve; the campaign's reserve mirrors it. */
inline reserve(doc, r, a, max_uses, budget, ok) {
    atomic {
        if
        :: doc.uses < max_uses && doc.granted + DISC(r) <= budget && doc.pending[r].attempt == 0 ->
            doc.uses = doc.uses + 1;
            doc.granted = doc.granted + DISC(r);
            doc.pending[r].attempt = a;
            doc.pending[r].kind = REDEEM;
            ok = true;
            INVARIANT
        :: else -> ok = false
        fi
    }
}

/* begin_release(doc, rid, ...): $set pending.<rid> (kind RELEASE) filtered on it being absent.
 * adapters/mongo_codes.py MongoPromoCodeRepository.begin_release; the campaign's mirrors it. */
inline begin_release(doc, r, a, ok) {
    atomic {
        if
        :: doc.pending[r].attempt == 0 ->
            doc.pending[r].attempt = a; doc.pending[r].kind = RELEASE; ok = true
        :: else -> ok = false
        fi
    }
}

/* The lowest per-user slot no other ACTIVE usage of the user holds (unique index (promo_id,
 * user_id, slot), resp. (campaign_id, user_id, campaign_slot)); above the limit: none free.
 * Redemptions._write_usage picks candidates with _free_slots and retries on a collision until a
 * fresh read of the slots finds none free: the outcome is one of the atomic states below. */
#define FREE_SLOT(r, field) ((HOLDS(1 - (r)) && usage[1 - (r)].field == 1) -> 2 : 1)
#define SLOTS_FREE(r) \
    (FREE_SLOT(r, slot) <= CODE_PER_USER && FREE_SLOT(r, campaign_slot) <= CAMPAIGN_PER_USER)
#define FENCED_OUT(r, a) (usage[r].status == ABANDONED && (usage[r].aborted & BIT(a)) != 0)
/* a usage (ACTIVE or RELEASED) written by attempt a */
#define WRITTEN_BY(r, a) \
    ((usage[r].status == ACTIVE || usage[r].status == RELEASED) && usage[r].attempt == (a))

/* UsageRepository.claim (adapters/mongo_usages.py claim; the collision path _after_collision
 * is its filtered replace): the insert of the usage with both slots, unique on _id and on both
 * slot indexes. */
inline claim(r, a, outcome) {
    atomic {
        if
        :: usage[r].status == NONE || (usage[r].status == ABANDONED && !FENCED_OUT(r, a)) ->
            /* insert_one, or the replace filtered on ABANDONED and aborted.<attempt> absent */
            if
            :: SLOTS_FREE(r) ->
                usage[r].slot = FREE_SLOT(r, slot);
                usage[r].campaign_slot = FREE_SLOT(r, campaign_slot);
                usage[r].status = ACTIVE;
                usage[r].attempt = a;
                outcome = CLAIMED;
                INVARIANT
            :: else -> outcome = SLOT_TAKEN
            fi
        :: FENCED_OUT(r, a) -> outcome = FENCED
        :: usage[r].status == VOIDED -> outcome = EXISTS    /* a Release voided the id */
        :: usage[r].status == ACTIVE || usage[r].status == RELEASED ->
            /* without retries of one id, another attempt of it never writes a usage */
            assert(usage[r].attempt != a); outcome = EXISTS
        fi
    }
}

/* UsageRepository.fence_redeem (adapters/mongo_usages.py): insert an ABANDONED placeholder with
 * aborted.<attempt>, or add aborted.<attempt> to the ABANDONED one; a usage (ACTIVE, RELEASED)
 * or VOIDED document is answered as it is. Its deciding write or read is one atomic step (a
 * document that is ACTIVE, RELEASED or VOIDED keeps its attempt). The verdict of
 * Sweeper.resolve: finalize (give back 0) when this attempt wrote the usage, else roll back. */
inline fence_redeem(r, a, give) {
    if
    :: usage[r].status == NONE ->
        usage[r].status = ABANDONED; usage[r].aborted = BIT(a); give = DISC(r)
    :: usage[r].status == ABANDONED -> usage[r].aborted = usage[r].aborted | BIT(a); give = DISC(r)
    :: usage[r].status == VOIDED -> give = DISC(r)
    :: usage[r].status == ACTIVE || usage[r].status == RELEASED ->
        give = (usage[r].attempt == a -> 0 : DISC(r))
    fi
}

/* UsageRepository.fence_release (adapters/mongo_usages.py): aborted.<attempt> on the ACTIVE
 * usage; else the usage as it is (the two are one atomic step: a usage a release reserved for
 * is ACTIVE or RELEASED, and RELEASED is final). The verdict of Sweeper.resolve: give the
 * discount back when this attempt released the usage, else abort the release. */
inline fence_release(r, a, give) {
    if
    :: usage[r].status == ACTIVE -> usage[r].aborted = usage[r].aborted | BIT(a); give = 0
    :: else -> give = ((usage[r].status == RELEASED && usage[r].released_by == a) -> DISC(r) : 0)
    fi
}

/* Locals are reset as soon as they are dead, in the atomic step that last reads them (a local
 * decision may join the atomic step before it: it reads nothing shared), so that states which
 * differ only in a stale local are one state. */

proctype Redeem(byte r) {
    byte a = r + 1;
    bool ok;
    byte outcome;

    /* 1. reserve on the campaign: Redemptions._take (service_layer/redemption.py) ->
     *    MongoCampaignRepository.reserve (adapters/mongo_campaigns.py) */
    CRASH;
    atomic {
        reserve(campaign, r, a, CAMPAIGN_MAX_USES, CAMPAIGN_BUDGET, ok);
        if
        :: !ok -> goto done    /* CAMPAIGN_EXHAUSTED / budget: refused, nothing held */
        :: else -> ok = false
        fi
    };

    /* 2. reserve on the code: Redemptions._take -> MongoPromoCodeRepository.reserve
     *    (adapters/mongo_codes.py) */
    CRASH;
    atomic {
        reserve(code, r, a, CODE_MAX_USES, CODE_BUDGET, ok);
        if
        :: !ok -> goto code_refused
        :: else -> ok = false
        fi
    };

#ifdef BUG_CAMPAIGN_SETTLED_EARLY
    CRASH;
    settle(campaign, r, a, 0);     /* BUG: finalized before the usage decides */
#endif

    /* 3. write the usage holding both slots: Redemptions._write_usage ->
     *    MongoUsageRepository.claim (adapters/mongo_usages.py) */
    CRASH;
    atomic {
        claim(r, a, outcome);
        if
        :: outcome == CLAIMED ->
            /* granted: the answer is decided here, the settles only follow it */
            outcome = 0
        :: outcome == SLOT_TAKEN || outcome == EXISTS ->
            /* no slot free (PER_USER_LIMIT_REACHED), or voided (REDEMPTION_VOIDED) */
            outcome = 0; goto compensate
        :: outcome == FENCED ->
            /* REDEMPTION_IN_PROGRESS: the sweep rolled the attempt back and settles it */
            outcome = 0; goto done
        fi
    };

    /* 4. settle the code, then the campaign: Redemptions._settle_quietly, for each */
    CRASH;
    settle(code, r, a, 0);
    CRASH;
    settle(campaign, r, a, 0);
    goto done;

compensate:
    /* Redemptions._take: codes.settle with the discount (compensate), code first */
    CRASH;
    settle(code, r, a, DISC(r));
code_refused:
    /* the code refused (or compensated): give the campaign's reservation back */
    CRASH;
    settle(campaign, r, a, DISC(r));
done:
crashed:
    finished++
}

/* the reservation of the redemption whose usage is read (attempt ua) */
#define OWN_REDEEM(doc, t, ua) (doc.pending[t].attempt == ua && doc.pending[t].kind == REDEEM)

proctype Release() {
    byte t;          /* the redemption id released */
    byte a = FIRST_RELEASE_ATTEMPT;
    byte ua;         /* the usage's attempt, as read */
    bool ok;
    bool code_first = RELEASE_ORDER;   /* begin_release on the code first? */

    select (t : 0 .. 1);
again:
    /* Redemptions.release (service_layer/redemption.py): read the usage (usages.get) */
    atomic {
        if
        :: usage[t].status == RELEASED -> goto done
        :: usage[t].status == ACTIVE -> ua = usage[t].attempt
        :: else -> goto void
        fi
    };
    goto in_flight;

void:
    /* nothing redeemed (yet): void it, MongoUsageRepository.void (adapters/mongo_usages.py):
     * insert VOIDED (unique _id), or ABANDONED -> VOIDED filtered on ABANDONED; a usage
     * written meanwhile is released instead */
    CRASH;
    atomic {
        if
        :: usage[t].status == NONE || usage[t].status == ABANDONED ->
            usage[t].status = VOIDED; goto done       /* REDEMPTION_NOT_FOUND */
        :: usage[t].status == VOIDED || usage[t].status == RELEASED -> goto done
        :: usage[t].status == ACTIVE -> ua = usage[t].attempt
        fi
    };

in_flight:
    /* a reservation in flight on the code (codes.get, promo.pending.get(rid)): the redemption's
     * own, its usage written, is settled here (finalize); any other is waited for
     * (Redemptions._wait_settled: read again, or give up with CONCURRENT_UPDATE) */
    atomic {
        if
        :: code.pending[t].attempt == 0 -> skip
        :: OWN_REDEEM(code, t, ua) -> goto help_code
        :: else -> ua = 0; if :: goto again :: goto done fi
        fi
    };
    /* the same on the campaign */
    atomic {
        if
        :: campaign.pending[t].attempt == 0 -> ua = 0
        :: OWN_REDEEM(campaign, t, ua) -> goto help_campaign
        :: else -> ua = 0; if :: goto again :: goto done fi
        fi
    };

    /* begin_release on both (MongoPromoCodeRepository.begin_release, and the campaign's); if
     * the second is refused, the first is settled without give-back and the pass repeats */
    CRASH;
    atomic {
        if
        :: code_first -> begin_release(code, t, a, ok)
        :: else -> begin_release(campaign, t, a, ok)
        fi;
        if :: !ok -> goto again :: else -> ok = false fi
    };
    CRASH;
    atomic {
        if
        :: code_first -> begin_release(campaign, t, a, ok)
        :: else -> begin_release(code, t, a, ok)
        fi;
        if :: !ok -> goto undo_first :: else -> ok = false fi
    };

    /* the usage RELEASED, both slots freed: MongoUsageRepository.release, filtered on ACTIVE and
     * aborted.<attempt> absent */
    CRASH;
    atomic {
        if
        :: usage[t].status == ACTIVE && (usage[t].aborted & BIT(a)) == 0 ->
            usage[t].status = RELEASED; usage[t].released_by = a;
            usage[t].slot = 0; usage[t].campaign_slot = 0;
            INVARIANT
        :: else -> goto not_released
        fi
    };
    /* give back on both, code first: Redemptions._settle_quietly with the usage's discount */
    CRASH;
    settle(code, t, a, DISC(t));
    CRASH;
    settle(campaign, t, a, DISC(t));
    goto done;

help_code:
    CRASH;
    atomic { settle(code, t, ua, 0); ua = 0 };
    goto again;
help_campaign:
    CRASH;
    atomic { settle(campaign, t, ua, 0); ua = 0 };
    goto again;

undo_first:
    CRASH;
    if
    :: code_first -> settle(code, t, a, 0)
    :: else -> settle(campaign, t, a, 0)
    fi;
    goto next_attempt;

not_released:
    /* fenced by the sweep (or released meanwhile): settle both without give-back, again */
    CRASH;
    settle(code, t, a, 0);
    CRASH;
    settle(campaign, t, a, 0);

next_attempt:
    /* the next pass draws a new attempt id; bounded to keep the state space small */
    if
    :: a < FIRST_RELEASE_ATTEMPT + RELEASE_ATTEMPTS - 1 -> a++; goto again
    :: else -> skip     /* CONCURRENT_UPDATE: the caller retries later */
    fi;
done:
crashed:
    finished++
}

/* Sweeper.resolve (service_layer/sweep.py) for one reservation, found by Sweeper.sweep on the
 * code (codes.with_pending) or on the campaign: fence the attempt out of the usage, then settle
 * the code (when the reservation is the code's) and then the campaign by the same verdict. The
 * sweep may stop after any step (SWEEP_STOP); a later run starts again from what is stored.
 * A reservation is resolved whatever its age: the model has no clock, so the sweep (or a Redeem
 * settling an overdue reservation, Redemptions._settle_overdue) may meet a live request. */
#define SWEEP_STOP if :: goto reset :: skip fi

/* the reservation pending.<i> of doc, read by the sweep (blocks while there is none) */
inline pick(doc, i, is_code) {
    atomic {
        doc.pending[i].attempt != 0 ->
        r = i; a = doc.pending[i].attempt; kind = doc.pending[i].kind; from_code = is_code
    }
}

proctype Sweep() {
    byte r;
    byte a;
    byte kind;
    bool from_code;
    byte give;        /* the give-back of the verdict; 0: finalize / abort the release */

next:
    /* Sweeper.sweep: a reservation on the code (codes.with_pending) or on the campaign */
    do
    :: pick(code, 0, true); break
    :: pick(code, 1, true); break
    :: pick(campaign, 0, false); break
    :: pick(campaign, 1, false); break
    :: atomic { finished == 3 && !PENDING(code) && !PENDING(campaign) } -> goto quiescent
    od;

    SWEEP_STOP;
    atomic {
        if
        :: kind == REDEEM ->
#ifdef BUG_UNFENCED_CAMPAIGN
            if
            :: !from_code ->   /* BUG: the campaign decided on a plain read of the usage */
                give = (WRITTEN_BY(r, a) -> 0 : DISC(r))
            :: else -> fence_redeem(r, a, give)
            fi
#else
            fence_redeem(r, a, give)
#endif
        :: kind == RELEASE -> fence_release(r, a, give)
        fi;
        kind = 0
    };
    if
    :: from_code ->
        SWEEP_STOP;
        atomic { settle(code, r, a, give); assert(code.pending[r].attempt != a); from_code = false }
    :: else -> skip
    fi;
    /* the campaign's reservation of the same attempt, by the same verdict */
    SWEEP_STOP;
    atomic { settle(campaign, r, a, give); assert(campaign.pending[r].attempt != a) };
reset:
    atomic { r = 0; a = 0; kind = 0; from_code = false; give = 0 };
    goto next;

quiescent:
    /* all requests ended and nothing is pending: the counters are exactly the ACTIVE usages */
    assert(code.uses == ACTIVE_USES && campaign.uses == ACTIVE_USES);
    assert(code.granted == ACTIVE_DISCOUNT && campaign.granted == ACTIVE_DISCOUNT)
}

init {
    atomic {
#ifdef LIMITS
        set_limits(LIMITS);
#else
        if
        :: set_limits(1, 1, 1, 1, 3, 3)     /* every limit 1: all of them bind at once */
        :: set_limits(2, 2, 2, 1, 3, 3)     /* only the campaign's per-user slot binds */
        :: set_limits(2, 2, 2, 2, 3, 2)     /* only the campaign's budget binds (1 + 2 > 2) */
        fi;
#endif
        run Redeem(0);
        run Redeem(1);
        run Release();
        run Sweep();
#if SWEEPERS > 1
        run Sweep();
#endif
    }
}
