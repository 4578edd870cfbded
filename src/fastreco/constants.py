"""Physical constants and detector parameters, each with its source.

Every number the simulation or reconstruction uses lives here, named, so that a
physicist can check it against its reference in one place. Units: lengths in cm,
energies in GeV unless the name says otherwise (``_MEV``), times in ns, fields in T.

Sources
-------
[PDG-AN]  PDG "Atomic and Nuclear Properties of Materials", lead tungstate (PbWO4)
          entry, https://pdg.lbl.gov/2024/AtomicNuclearProperties/
[PDG-PP]  R.L. Workman et al. (Particle Data Group), Prog. Theor. Exp. Phys. 2022, 083C01:
          chapters "Passage of particles through matter" (34) and the particle listings.
[GP]      G. Grindhammer, S. Peters, "The parameterized simulation of electromagnetic showers
          in homogeneous and sampling calorimeters", hep-ex/0001020 (the basis of GFlash).
[CMS-ECAL] CMS Collaboration, "The CMS electromagnetic calorimeter project: Technical Design
          Report", CERN-LHCC-97-033; and JINST 3 (2008) S08004 (the CMS experiment), sec. 4.
[CMS-TB]  P. Adzic et al., "Energy resolution of the barrel of the CMS electromagnetic
          calorimeter", JINST 2 (2007) P04004.
[CMS-TIME] CMS Collaboration, "Time reconstruction and performance of the CMS electromagnetic
          calorimeter", JINST 5 (2010) T03011.
[CMS-TRK] CMS Collaboration, "Description and performance of track and primary-vertex
          reconstruction with the CMS tracker", JINST 9 (2014) P10009, fig. 2 (material budget).
[WIGMANS] R. Wigmans, "Calorimetry: Energy Measurement in Particle Physics", 2nd ed. (2017),
          sec. 2.3 (electromagnetic fraction of hadron showers).
"""

from __future__ import annotations

import math

# --- fundamental -------------------------------------------------------------------------------
SPEED_OF_LIGHT_CM_PER_NS = 29.9792458  # [PDG-PP] c
ELECTRON_MASS = 0.51099895e-3  # GeV [PDG-PP]
PI0_MASS = 0.1349768  # GeV [PDG-PP] (also what the `particle` package returns)
PI0_TO_GAMMA_GAMMA_BR = 0.98823  # [PDG-PP] pi0 -> gamma gamma branching ratio
MAGNETIC_RIGIDITY_GEV_PER_T_M = 0.299792458  # p[GeV] = 0.2998 * B[T] * R[m]

# --- lead tungstate (PbWO4) [PDG-AN] -----------------------------------------------------------
PBWO4_DENSITY = 8.300  # g/cm^3
PBWO4_RADIATION_LENGTH = 0.8903  # cm (X0)
PBWO4_MOLIERE_RADIUS = 1.959  # cm (R_M)
PBWO4_CRITICAL_ENERGY = 9.64e-3  # GeV (E_c for electrons, Rossi definition as tabulated)
PBWO4_NUCLEAR_INTERACTION_LENGTH = 20.28  # cm (lambda_I)
PBWO4_DEDX_MIN = 10.20e-3  # GeV/cm, minimum ionization (1.229 MeV cm^2/g * 8.300 g/cm^3)
PBWO4_MEAN_EXCITATION_ENERGY_EV = 600.7  # eV (I)
PBWO4_Z_OVER_A = 0.41315  # <Z/A>
# Effective Z weighted by mass fraction (Pb 0.4553, W 0.4040, O 0.1406), as GFlash computes it.
PBWO4_Z_EFF = 82 * 0.4553 + 74 * 0.4040 + 8 * 0.1406

# --- CMS ECAL barrel geometry [CMS-ECAL] ---------------------------------------------------------
ECAL_BARREL_N_ETA = 170  # crystals along eta (85 per half barrel)
ECAL_BARREL_N_PHI = 360  # crystals along phi
ECAL_BARREL_CRYSTAL_DETA = 0.0174  # eta size of one crystal
ECAL_BARREL_CRYSTAL_DPHI = 2.0 * math.pi / ECAL_BARREL_N_PHI  # 0.01745 rad
ECAL_BARREL_ETA_MAX = ECAL_BARREL_N_ETA / 2 * ECAL_BARREL_CRYSTAL_DETA  # 1.479
ECAL_BARREL_INNER_RADIUS = 129.0  # cm, crystal front faces
ECAL_BARREL_CRYSTAL_LENGTH = 23.0  # cm (25.8 X0)
ECAL_BARREL_CRYSTAL_FRONT_SIZE = 2.2  # cm, 22 x 22 mm^2 front face

# --- ECAL readout [CMS-TB], [CMS-ECAL], [CMS-TIME] -----------------------------------------------
ECAL_STOCHASTIC_TERM = 0.028  # GeV^1/2: sigma/E = 2.8%/sqrt(E), photostatistics [CMS-TB]
ECAL_NOISE_PER_CRYSTAL = 0.040  # GeV, electronic noise per barrel crystal [CMS-TB]
ECAL_CONSTANT_TERM = 0.003  # 0.3%, intercalibration spread after calibration [CMS-TB]
# Zero-suppression threshold outside the full-readout regions: 3 sigma of the noise (CMS's
# barrel ZS sits near this value; configurable per run).
ECAL_ZS_THRESHOLD = 3.0 * ECAL_NOISE_PER_CRYSTAL
# Selective readout [CMS-ECAL sec. 4.7]: around every crystal with a deposit above this energy
# a window of +/- ECAL_SR_HALF_WIDTH crystals is read out in full, without zero suppression.
ECAL_SR_THRESHOLD = 0.1  # GeV
ECAL_SR_HALF_WIDTH = 2
# Hit-time resolution sigma_t = N / (A / sigma_noise) (+) C  [CMS-TIME, test-beam values].
ECAL_TIME_NOISE_TERM = 33.0  # ns
ECAL_TIME_CONSTANT_TERM = 0.07  # ns

# --- material in front of the ECAL [CMS-TRK] -------------------------------------------------------
# x/X0(eta) = TRACKER_X0_CENTRAL * cosh(eta) + TRACKER_X0_ETA2 * eta^2: ~0.4 X0 at eta=0 rising to
# ~1.8 X0 at |eta| = 1.4, the shape of the CMS tracker material budget of [CMS-TRK] fig. 2.
TRACKER_X0_CENTRAL = 0.40
TRACKER_X0_ETA2 = 0.48
TRACKER_MATERIAL_R_MIN = 4.0  # cm, beam pipe / first pixel layer
TRACKER_MATERIAL_R_MAX = 110.0  # cm, outer tracker support
PAIR_PRODUCTION_X0_FACTOR = 7.0 / 9.0  # P(conv) = 1 - exp(-7/9 x/X0) [PDG-PP 34.4.5]
SOLENOID_FIELD = 3.8  # T, CMS solenoid

# --- beam spot [CMS-TRK] -------------------------------------------------------------------------
BEAMSPOT_SIGMA_Z = 3.5  # cm, luminous region length (LHC Run 2 typical)

# --- GFlash / Grindhammer-Peters homogeneous parametrization [GP] ---------------------------------
# Longitudinal: <ln T> = ln(ln y + GP_T1), <ln alpha> = ln(GP_A1 + (GP_A2 + GP_A3/Z) ln y), y=E/Ec
GP_T1 = -0.858
GP_A1 = 0.21
GP_A2 = 0.492
GP_A3 = 2.38
# sigma(ln T) = 1/(GP_SIGT1 + GP_SIGT2 ln y); sigma(ln alpha) = 1/(GP_SIGA1 + GP_SIGA2 ln y)
GP_SIGT1, GP_SIGT2 = -1.4, 1.26
GP_SIGA1, GP_SIGA2 = -0.58, 0.86
# correlation rho(ln T, ln alpha) = GP_RHO1 + GP_RHO2 ln y
GP_RHO1, GP_RHO2 = 0.705, -0.023
# Radial (Moliere units), tau = t / T:
#  R_C = z1 + z2 tau,  z1 = GP_RC1 + GP_RC2 ln E,  z2 = GP_RC3 + GP_RC4 Z
#  R_T = k1 (exp(k3 (tau - k2)) + exp(k4 (tau - k2))),  k1 = GP_RT1 + GP_RT2 Z, k2 = GP_RT3,
#        k3 = GP_RT4, k4 = GP_RT5 + GP_RT6 ln E
#  p   = p1 exp((p2 - tau)/p3 - exp((p2 - tau)/p3)), p1 = GP_WC1 + GP_WC2 Z, p2 = GP_WC3 + GP_WC4 Z,
#        p3 = GP_WC5 + GP_WC6 ln E
GP_RC1, GP_RC2, GP_RC3, GP_RC4 = 0.0251, 0.00319, 0.1162, -0.000381
GP_RT1, GP_RT2, GP_RT3, GP_RT4, GP_RT5, GP_RT6 = 0.659, -0.00309, 0.645, -2.59, 0.3585, 0.0421
GP_WC1, GP_WC2, GP_WC3, GP_WC4, GP_WC5, GP_WC6 = 2.632, -0.00094, 0.401, 0.00187, 1.313, -0.0686
# Lateral scale applied to every GP radius. GP's fit (GEANT3 era) leaves 85-87 % of the energy
# inside 1 R_M of PbWO4; this tune brings it to the PDG's "about 90 %" [PDG-PP 34.5] while keeping
# E3x3/E and E5x5/E of unconverted photons at CMS's measured ~0.94 / ~0.97 [CMS-ECAL].
GP_RADIAL_SCALE = 0.90
# Number of spots N = GP_SPOT_N1 ln(Z) E^GP_SPOT_N2 (E in GeV)
GP_SPOT_N1, GP_SPOT_N2 = 93.0, 0.876
# A photon converts after an exponential depth of mean 9/7 X0 before its pair showers [PDG-PP].
PHOTON_CONVERSION_LENGTH_X0 = 9.0 / 7.0

# --- hadronic showers in PbWO4 [WIGMANS], [PDG-PP] -------------------------------------------------
# EM fraction of a hadron shower f_em = 1 - (E/E0)^(k-1), E0 = 1 GeV, k = 0.82 [WIGMANS].
HADRON_EM_FRACTION_E0 = 1.0  # GeV
HADRON_EM_FRACTION_K = 0.82
# Relative spread of f_em event by event (the large, non-Gaussian fluctuations of hadron showers).
HADRON_EM_FRACTION_SPREAD = 0.35
# Non-EM response relative to EM (h/e); e/h ~ 2 for lead tungstate (CMS ECAL e/pi ratio).
HADRON_H_OVER_E = 0.5
# Longitudinal profile of the non-EM part: Gamma distribution in units of lambda_I (shape, scale)
# after the first interaction, peaking ~1 lambda_I deep. The EM part (pi0s of the first
# interaction) develops on the X0 scale with the GP profile from the interaction point.
HADRON_PROFILE_SHAPE = 2.0
HADRON_PROFILE_SCALE_LAMBDA = 0.9
# Lateral spread of the non-EM part: r ~ Gamma(2, R/2), mean radius R [cm]; the hadronic core
# is a few cm wide (~0.2 lambda_I), much wider than the EM Moliere radius.
HADRON_LATERAL_RADIUS = 4.0  # cm
# Energy carried by one hadronic spot, to set the number of spots (spots ~ E / this).
HADRON_SPOT_ENERGY = 0.05  # GeV

# --- ionization: Landau-Vavilov most probable value [PDG-PP eq. 34.12] ----------------------------
LANDAU_K = 0.307075e-3  # GeV mol^-1 cm^2 (K = 4 pi N_A r_e^2 m_e c^2)
LANDAU_J = 0.200  # j in Delta_p = xi [ln(2mc^2 b^2 g^2/I) + ln(xi/I) + j - b^2 - delta]
PLASMA_ENERGY_COEFF_EV = 28.816  # hbar omega_p = 28.816 sqrt(rho <Z/A>) eV
