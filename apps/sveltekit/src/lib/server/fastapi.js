import { env } from '$env/dynamic/private';

export const DEFAULT_FASTAPI_URL = 'http://127.0.0.1:8000';

/** Base URL of the FastAPI service, read at run time (never baked into the browser bundle). */
export function fastapiUrl() {
	return (env.FASTAPI_URL || DEFAULT_FASTAPI_URL).replace(/\/+$/, '');
}

/**
 * GET a JSON document from the FastAPI service.
 * Resolves to { ok: true, data } or { ok: false, error } so pages render while the API is down.
 * @param {typeof fetch} fetchFn
 * @param {string} path e.g. "/api/v1/tfd/status"
 * @param {number} timeoutMs
 */
export async function getJson(fetchFn, path, timeoutMs = 3000) {
	try {
		const response = await fetchFn(`${fastapiUrl()}${path}`, {
			headers: { accept: 'application/json' },
			signal: AbortSignal.timeout(timeoutMs)
		});
		if (!response.ok) return { ok: false, error: `FastAPI answered ${response.status} for ${path}` };
		return { ok: true, data: await response.json() };
	} catch (err) {
		return { ok: false, error: `FastAPI unreachable: ${err instanceof Error ? err.message : String(err)}` };
	}
}
