/* Turns simavr's UART console output back into bytes: drops its colour escapes (ESC [ ... m)
 * and line breaks, keeps the hex between '@' and '$', decodes it. stdin -> stdout. */
#include <stdio.h>

static int nibble(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int main(void)
{
    int c, inside = 0, hi = -1, done = 0;
    while ((c = getchar()) != EOF) {
        if (c == 0x1b) { /* skip an escape sequence up to its final letter */
            while ((c = getchar()) != EOF && !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) {
            }
            continue;
        }
        if (c == '@') { inside = 1; continue; }
        if (c == '$') { done = inside; inside = 0; continue; }
        if (!inside || nibble(c) < 0) continue;
        if (hi < 0) hi = nibble(c);
        else { putchar(hi << 4 | nibble(c)); hi = -1; }
    }
    if (!done || hi >= 0) {
        fprintf(stderr, "hexextract: no complete '@...$' block in the simavr output\n");
        return 1;
    }
    return 0;
}
