/**
 * @module
 * This lsvd's version: printed by `lsvd --version`, recorded in the format record, compared with
 * a volume's "minimumLsvd". Bump it with every release that changes behaviour users see.
 */

export const LSVD_VERSION = "0.3.0";
