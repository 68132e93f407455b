/** The built-in checks: importing this registers them, in the order `verify` runs them. */
import './checks-decompose.js';
import './checks-dla.js';
import './checks-hooks.js';
import './checks-processing.js';
import './checks-gradients-fd.js';
import './checks-gradients-ap.js';
