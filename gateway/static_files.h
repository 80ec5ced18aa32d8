/*  static_files.h - the web client's files (gateway/static), read once at start
    and served from memory at GET /, /app.js, ... (one level, no directories). */
#ifndef SLUICE_GATEWAY_STATIC_FILES_H
#define SLUICE_GATEWAY_STATIC_FILES_H

#include <stddef.h>

typedef struct static_files_t static_files_t;

typedef struct {
    const char *data;
    size_t size;
    const char *content_type;
} static_file_t;

/* Loads the regular files of dir (an empty or NULL dir gives an empty set). NULL
   when dir cannot be read (logged). */
static_files_t *static_files_new(const char *dir);
void static_files_destroy(static_files_t **self_p);

/* The file for a request path ("/" is index.html), or NULL. */
const static_file_t *static_files_get(const static_files_t *self, const char *path);

#endif
