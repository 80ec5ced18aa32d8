/*  journal.h - which assistant messages this process has left in status
    `streaming`, kept in a small file so that if the process dies mid-stream,
    another stream worker (or this one, restarted) can mark them `failed`.

    The problem: a killed worker cannot say anything about the messages it was
    streaming, and the database cannot tell an abandoned `streaming` row from a slow
    one. The journal is the simple honest answer on one host: each worker appends
    "B" when a message starts streaming and "E" when it was finished, to its own
    file in a shared folder, and holds an exclusive flock(2) on that file for its
    whole life. The kernel drops the lock when the process dies, however it dies, so
    "a journal file nobody has locked" means exactly "its owner is gone". Every
    worker looks for such files at start and every few seconds (journal_adopt),
    copies their open entries into its own journal, deletes them, and then finishes
    those messages as `failed` through ordinary `db` ops.

    What it does not cover: a whole host lost with its disk (see docs/chat.md for
    the db-side sweep that would). Lines are plain text:
      B <message_id> <conversation_id> <user_id> <device_id>
      E <message_id>
    A negative message_id is a begin in flight, -nonce (actor.h): the row it may
    have made is found by that nonce.
    A torn last line (a crash inside write) is ignored.
*/
#ifndef SLUICE_JOURNAL_H
#define SLUICE_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct journal_t journal_t;

typedef struct {
    int64_t message_id;      /* the assistant message left streaming */
    int64_t conversation_id; /* to find it again (chat.message.list) */
    int64_t user_id;         /* the auth to act as */
    int64_t device_id;
} journal_entry_t;

/*  Creates dir if needed and a new journal file in it named after name (and the
    pid), locked. Returns NULL with why filled in on failure. */
journal_t *journal_open(const char *dir, const char *name, char *why, size_t why_size);

/*  Closes the file. With no open entry left the file is removed; otherwise it stays
    (unlocked, so another worker adopts what is left). */
void journal_close(journal_t **self_p);

int journal_begin(journal_t *self, const journal_entry_t *entry);
int journal_end(journal_t *self, int64_t message_id);
size_t journal_open_count(const journal_t *self);

/*  Takes over every journal in the folder whose owner is gone: its open entries are
    written to our journal, fn is called for each, and the file is removed. Returns
    how many entries were adopted. */
size_t journal_adopt(journal_t *self, void (*fn)(void *arg, const journal_entry_t *entry),
                     void *arg);

/*  Pure: the entries of a journal's text that were begun and not ended, in order.
 *out is malloc'd (free it); returns the count. */
size_t journal_parse(const char *text, size_t len, journal_entry_t **out);

const char *journal_path(const journal_t *self);

#endif
