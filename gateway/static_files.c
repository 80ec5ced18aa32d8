/*  static_files.c - web client files from memory. See static_files.h. */
#include "static_files.h"
#include "slog.h"

#include <czmq.h>
#include <dirent.h>
#include <sys/stat.h>

#define S_FILE_MAX (4 * 1024 * 1024)

struct static_files_t {
    zhashx_t *files; /* "/name" -> static_file_t (owned, data owned) */
};

static void s_free(void **item_p)
{
    static_file_t *f = *item_p;
    if (f) {
        free((void *)f->data);
        free(f);
    }
    *item_p = NULL;
}

static const char *s_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return "application/octet-stream";
    if (!strcmp(dot, ".html"))
        return "text/html; charset=utf-8";
    if (!strcmp(dot, ".js") || !strcmp(dot, ".mjs"))
        return "text/javascript; charset=utf-8";
    if (!strcmp(dot, ".css"))
        return "text/css; charset=utf-8";
    if (!strcmp(dot, ".svg"))
        return "image/svg+xml";
    if (!strcmp(dot, ".png"))
        return "image/png";
    if (!strcmp(dot, ".ico"))
        return "image/x-icon";
    if (!strcmp(dot, ".json"))
        return "application/json";
    return "application/octet-stream";
}

static_files_t *static_files_new(const char *dir)
{
    static_files_t *self = calloc(1, sizeof *self);
    self->files = zhashx_new();
    zhashx_set_destructor(self->files, s_free);
    if (!dir || !*dir)
        return self;
    DIR *d = opendir(dir);
    if (!d) {
        slog_error("static files: cannot open %s: %s", dir, strerror(errno));
        static_files_destroy(&self);
        return NULL;
    }
    struct dirent *ent;
    while ((ent = readdir(d))) {
        if (ent->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > S_FILE_MAX)
            continue;
        FILE *file = fopen(path, "rb");
        if (!file)
            continue;
        char *data = malloc((size_t)st.st_size + 1);
        size_t n = fread(data, 1, (size_t)st.st_size, file);
        fclose(file);
        static_file_t *f = calloc(1, sizeof *f);
        f->data = data;
        f->size = n;
        f->content_type = s_type(ent->d_name);
        char key[300];
        snprintf(key, sizeof key, "/%s", ent->d_name);
        zhashx_update(self->files, key, f);
    }
    closedir(d);
    slog_info("static files: %zu from %s", zhashx_size(self->files), dir);
    return self;
}

void static_files_destroy(static_files_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zhashx_destroy(&(*self_p)->files);
    free(*self_p);
    *self_p = NULL;
}

const static_file_t *static_files_get(const static_files_t *self, const char *path)
{
    if (!self)
        return NULL;
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    return zhashx_lookup(self->files, path);
}
