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
[CMS-PHO] CMS Collaboration, "Performance of photon reconstruction and identification with the CMS
          detector in proton-proton collisions at sqrt(s) = 8 TeV", JINST 10 (2015) P08010,
          sec. 3 (superclusters: the phi road of converted photons and bremsstrahlung).
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
# Supercluster phi road [CMS-PHO sec. 3]: the 3.8 T field spreads the legs of a converted photon
# (and bremsstrahlung) in phi, so CMS superclusters extend along phi beyond the shower's core. A
# leg of transverse momentum pT reaches the barrel front (r = 129 cm) at
# dphi = asin(0.3 B r / (2 pT)); +/- 35 crystals (0.61 rad) reach legs down to pT ~ 1.3 GeV.
ECAL_ROAD_HALF_WIDTH_PHI = 35  # crystals on each side of the seed
# Crystals of the road count above 4 sigma of the noise: above the 3 sigma zero suppression, so
# the few noise-only crystals that pass it (0.13 % of the road's ~1,700 crystals) mostly drop out.
ECAL_ROAD_THRESHOLD = 4.0 * ECAL_NOISE_PER_CRYSTAL  # GeV

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

# ================================================================================================
# --- CMS HGCAL (one endcap) ----------------------------------------------------------------------
# ================================================================================================
# Sources of this section:
# [HGCAL-TDR] CMS Collaboration, "The Phase-2 Upgrade of the CMS Endcap Calorimeter", Technical
#             Design Report CERN-LHCC-2017-023 (CMS-TDR-019): layout, cell sizes, timing, pileup.
# [HGCAL-DD]  The CMS HGCAL geometry description of the 26 + 21 layer design that followed the
#             TDR (CMSSW Geometry/HGCalCommonData/data/hgcalEE/v17/hgcalEE.xml, hgcalHEsil/v17 and
#             hgcalHEmix/v17): absorber thicknesses per layer and layer pitch.
# [PDG-AN]    (above) lead, copper, iron, tungsten, silicon and G10 entries.
# [MTD-TDR]   CMS Collaboration, "A MIP Timing Detector for the CMS Phase-2 Upgrade",
#             CERN-LHCC-2019-003: HL-LHC luminous region (z and time spread).
# [CMS-DNDETA] CMS Collaboration, "Pseudorapidity distribution of charged hadrons in proton-proton
#             collisions at sqrt(s) = 13 TeV", Phys. Lett. B 751 (2015) 143.
# [AKCHURIN]  N. Akchurin et al., "On the timing performance of thin planar silicon sensors",
#             Nucl. Instrum. Meth. A 859 (2017) 31: sigma_t = A / (S/N) (+) C.

# --- acceptance and granularity [HGCAL-TDR] ----------------------------------------------------
HGCAL_Z_FRONT = 320.0  # cm, front face of the electromagnetic section (CE-E)
HGCAL_ETA_MIN = 1.5  # |eta| acceptance
HGCAL_ETA_MAX = 3.0
# Hexagonal silicon cells of the 8-inch wafers: 432 cells of 0.52 cm^2 on high-density (120 um)
# wafers at small radius, 192 cells of 1.18 cm^2 on low-density (200/300 um) wafers elsewhere.
HGCAL_FINE_CELL_AREA = 0.52  # cm^2
HGCAL_COARSE_CELL_AREA = 1.18  # cm^2
# Radius of the boundary between fine and coarse cells (the high-fluence region); CMSSW's first
# HGCAL description used rMaxFine = 75 cm (Geometry/HGCalCommonData/data/TB160/hgcalEE.xml).
HGCAL_FINE_RADIUS = 75.0  # cm

# --- materials [PDG-AN] (X0 and lambda_I in cm, dE/dx_min in GeV/cm, E_c for electrons in GeV) ----
LEAD_RADIATION_LENGTH = 0.5612
LEAD_NUCLEAR_INTERACTION_LENGTH = 17.59
LEAD_DEDX_MIN = 1.122e-3 * 11.35  # 1.122 MeV cm^2/g x 11.35 g/cm^3
LEAD_CRITICAL_ENERGY = 7.43e-3
LEAD_DENSITY = 11.35  # g/cm^3
COPPER_RADIATION_LENGTH = 1.436
COPPER_NUCLEAR_INTERACTION_LENGTH = 15.32
COPPER_DEDX_MIN = 1.403e-3 * 8.960
COPPER_CRITICAL_ENERGY = 19.42e-3
COPPER_DENSITY = 8.960
# Stainless steel is taken as iron.
IRON_RADIATION_LENGTH = 1.757
IRON_NUCLEAR_INTERACTION_LENGTH = 16.77
IRON_DEDX_MIN = 1.451e-3 * 7.874
IRON_CRITICAL_ENERGY = 21.68e-3
IRON_DENSITY = 7.874
TUNGSTEN_RADIATION_LENGTH = 0.3504
TUNGSTEN_NUCLEAR_INTERACTION_LENGTH = 9.946
TUNGSTEN_DEDX_MIN = 1.145e-3 * 19.3
TUNGSTEN_CRITICAL_ENERGY = 7.97e-3
TUNGSTEN_DENSITY = 19.3
SILICON_RADIATION_LENGTH = 9.370
SILICON_NUCLEAR_INTERACTION_LENGTH = 46.52
SILICON_DEDX_MIN = 1.664e-3 * 2.329
SILICON_CRITICAL_ENERGY = 40.19e-3
SILICON_DENSITY = 2.329
SILICON_Z_OVER_A = 0.49848
SILICON_MEAN_EXCITATION_ENERGY_EV = 173.0
# Printed circuit boards as G10 (approximate: rho 1.7 g/cm^3, X0 ~ 33 g/cm^2, lambda_I ~ 90 g/cm^2,
# dE/dx ~ 1.87 MeV cm^2/g; E_c from the PDG's 610 MeV / (Z + 1.24) with Z_eff ~ 10).
PCB_RADIATION_LENGTH = 19.4
PCB_NUCLEAR_INTERACTION_LENGTH = 53.1
PCB_DEDX_MIN = 1.87e-3 * 1.7
PCB_CRITICAL_ENERGY = 0.610 / (10.0 + 1.24)
# Moliere radius R_M = E_s X0 / E_c with the scale energy E_s = 21.2052 MeV [PDG-PP 34.4.6]; for a
# stack of layers 1/R_M = sum_j (t_j / L) / R_M,j (volume fractions), the PDG's mixture rule.
MOLIERE_SCALE_ENERGY = 21.2052e-3  # GeV
# Copper-tungsten module baseplates of the CE-E: 75 % tungsten by mass.
CUW_TUNGSTEN_MASS_FRACTION = 0.75

# --- layer structure [HGCAL-DD] ------------------------------------------------------------------
# CE-E: 13 cassettes of two silicon layers; each cassette holds one lead plate (2.77 mm in the
# first, 4.97 mm in the next eight, 8.22 mm in the last four), two 0.1 mm Cu + 0.3 mm steel
# claddings, a 6.05 mm copper cooling plate and a 1 mm steel cover; the rest of the 25.6 mm of a
# cassette (besides lead) is the two modules and air. Per silicon layer (half a cassette):
HGCAL_EE_LEAD_CM = (0.1385,) * 2 + (0.2485,) * 16 + (0.411,) * 8
HGCAL_EE_COPPER_CM = 0.3125  # cooling plate and cladding
HGCAL_EE_STEEL_CM = 0.080  # cladding and cover
# Each CE-E module: a CuW baseplate (~1.4 mm, approximate), a PCB (1.6 mm) and the sensor (300 um).
# With these, the CE-E totals 27.7 X0 and 1.5 lambda_I, the depth CMS quotes for it.
HGCAL_EE_CUW_CM = 0.14
HGCAL_PCB_CM = 0.16
HGCAL_SILICON_CM = 0.030
HGCAL_EE_PITCH_EXTRA_CM = 1.28  # layer pitch = this + the lead thickness (25.6 mm per cassette)
# CE-H: 21 layers of stainless-steel absorber, 45 mm in the first, 41.5 mm in the next ten and
# 60.7 mm in the last ten, each followed by a 2.5 mm steel cover, a 6.35 mm copper cooling plate
# and a silicon module; pitch = absorber + 21.55 mm (first layer: + 21.8 mm).
HGCAL_HE_STEEL_CM = (4.5,) + (4.15,) * 10 + (6.07,) * 10
HGCAL_HE_COVER_STEEL_CM = 0.25
HGCAL_HE_COPPER_CM = 0.635
HGCAL_HE_PITCH_EXTRA_CM = 2.155
# No scintillator tiles: where CMS reads the outer CE-H out with scintillator tiles, this model
# keeps the coarse silicon cells.

# --- silicon signal [PDG-PP eq. 34.12], [HGCAL-TDR] ---------------------------------------------
# Most probable energy loss of a minimum-ionizing particle in 300 um of silicon: the
# Landau-Vavilov MPV (xi = 5.35 keV, beta*gamma ~ 100, Sternheimer density effect) gives 84 keV,
# ~0.28 keV/um; the MIP is the unit of the HGCAL signal. Landau width xi / MPV = 0.064.
HGCAL_MIP_MPV_300UM = 84e-6  # GeV
HGCAL_MIP_LANDAU_WIDTH = 0.064  # xi / MPV for 300 um of silicon
# Sampling fluctuations of shower deposits, in two parts whose variances add up to k N for a
# mean deposit of N MIPs (k in MIPs); k = a^2 / w with w ~ 11 MeV per MIP in the CE-E gives the
# EM stochastic term a ~ 21 %/sqrt(E) of the TDR's simulation (20-25 %/sqrt(E) quoted):
#  * in each cell, a compound Poisson: Poisson(N / m) crossings of Gamma(s, m/s) amplitudes with
#    mean m ~ 1.2 MIP (so shower tails show the MIP peak), variance m (1 + 1/s) N = 1.5 N;
#  * for each shower in each layer, a common factor (Gamma, mean 1) with the rest of the variance,
#    (k - 1.5) N_layer: the fluctuation of the number of particles crossing the layer.
HGCAL_SAMPLING_VARIANCE_MIP = 4.0
HGCAL_CELL_QUANTUM_MIP = 1.2  # m
HGCAL_CELL_QUANTUM_SHAPE = 4.0  # s
# Readout [HGCAL-TDR]: zero suppression at 0.5 MIP; noise of ~0.1 MIP (S/N ~ 10 for a MIP at the
# start of HL-LHC operation).
HGCAL_MIP_THRESHOLD = 0.5  # MIP
HGCAL_NOISE_MIP = 0.1  # MIP
# Hit time resolution sigma_t = A / (S/N) (+) C [AKCHURIN] with S/N = signal / noise; A and C give
# ~20-30 ps above ~30 MIP as in [HGCAL-TDR].
HGCAL_TIME_NOISE_TERM = 1.5  # ns
HGCAL_TIME_CONSTANT_TERM = 0.020  # ns

# --- showers in the sampling structure ----------------------------------------------------------
# Energy of one EM spot (GeV): about one MIP's worth in the CE-E, so that the spot granularity
# does not show in the shower tails; capped per particle by the run's max_spots.
HGCAL_EM_SPOT_ENERGY = 0.01
# Non-EM response relative to EM for silicon-steel (e/h ~ 1.6; e/pi ~ 1.2-1.3 at 50 GeV):
HGCAL_H_OVER_E = 0.6
# Mean radius of the non-EM part of hadron showers, in units of the local effective lambda_I
# (r ~ Gamma(2, mean/2)): 95 % within ~0.7 lambda_I, the PDG's "about 1 lambda_I" for the whole
# shower including its halo.
HGCAL_HADRON_LATERAL_LAMBDA = 0.3

# --- pileup [CMS-DNDETA], [MTD-TDR] ----------------------------------------------------------------
# Minimum-bias interaction: dN_ch/deta ~ 5.5 at eta = 0 at 13 TeV [CMS-DNDETA], rising towards
# |eta| ~ 2 and at 14 TeV: ~6-7 charged particles per unit eta; about as many photons (from pi0s).
HGCAL_PU_DNCH_DETA = 6.5
HGCAL_PU_DNGAMMA_DETA = 6.5
# pT spectra dN/dpT ~ pT exp(-2 pT / <pT>) (a Gamma(2) distribution, falling exponentially).
HGCAL_PU_CHARGED_MEAN_PT = 0.5  # GeV
HGCAL_PU_PHOTON_MEAN_PT = 0.25  # GeV, each pi0 photon carries half of its parent's pT on average
# HL-LHC luminous region [MTD-TDR]: ~4-5 cm rms in z, 180-200 ps rms in time.
HGCAL_BEAMSPOT_SIGMA_Z = 4.5  # cm
HGCAL_BEAMSPOT_SIGMA_T = 0.2  # ns
CHARGED_PION_MASS = 0.13957039  # GeV [PDG-PP]
MUON_MASS = 0.1056583755  # GeV [PDG-PP]

# ================================================================================================
# --- liquid-argon TPC (ProtoDUNE-SP-like collection plane) --------------------------------------
# ================================================================================================
# Sources of this section:
# [PDG-AN]    (above) liquid argon entry: density, X0, E_c, lambda_I, I, <Z/A>, Sternheimer
#             density-effect parameters.
# [PDSP-TDR]  DUNE Collaboration, "The Single-Phase ProtoDUNE Technical Design Report",
#             arXiv:1706.07081: APA wire pitch (4.79 mm collection), 480 collection wires per APA
#             face, 2 MHz sampling, 500 V/cm drift field, 3.6 m drift, 12-bit ADC, cold
#             electronics gain 14 mV/fC with 2 us shaping.
# [PDSP-PERF] DUNE Collaboration, "First results on ProtoDUNE-SP liquid argon time projection
#             chamber performance from a beam test at the CERN Neutrino Platform",
#             JINST 15 (2020) P12004: collection baseline ~900 ADC, noise ~3-4 ADC (ENC ~550 e),
#             coherent noise across the channels of one front-end board (48 collection wires).
# [WALKOWIAK] W. Walkowiak, "Drift velocity of free electrons in liquid argon", NIM A 449 (2000)
#             288: 1.6 mm/us at 500 V/cm and 87 K.
# [ARGONEUT-R] ArgoNeuT Collaboration, "A study of electron recombination using highly ionizing
#             particles in the ArgoNeuT LArTPC", JINST 8 (2013) P08005: modified box model.
# [MIYAJIMA]  M. Miyajima et al., Phys. Rev. A 9 (1974) 1438: W_ion = 23.6 eV in liquid argon.
# [LI-DIFF]   Y. Li et al., "Measurement of longitudinal electron diffusion in liquid argon",
#             NIM A 816 (2016) 160 (D_L); transverse D_T from the LArSoft/dunetpc ProtoDUNE-SP
#             simulation defaults (DiffusionTrans 8.8e-9 cm^2/ns).
# [SUZUKI]    T. Suzuki, D.F. Measday, J.P. Roalsvig, "Total nuclear capture rates for negative
#             muons", Phys. Rev. C 35 (1987) 2212: mu- lifetime in argon 537 ns.
LAR_DENSITY = 1.396  # g/cm^3 [PDG-AN]
LAR_Z_OVER_A = 0.45059  # <Z/A> [PDG-AN]
LAR_MEAN_EXCITATION_ENERGY_EV = 188.0  # eV (I) [PDG-AN]
LAR_RADIATION_LENGTH = 14.0  # cm (X0 = 19.55 g/cm^2 / 1.396) [PDG-AN]
LAR_CRITICAL_ENERGY = 32.84e-3  # GeV, E_c for electrons [PDG-AN]
LAR_NUCLEAR_INTERACTION_LENGTH = 85.77  # cm (lambda_I) [PDG-AN]
LAR_DEDX_MIN = 2.105e-3  # GeV/cm (1.508 MeV cm^2/g * 1.396 g/cm^3) [PDG-AN]
# Sternheimer density-effect parameters of liquid argon [PDG-AN]: -C, x0, x1, a, k, delta0.
LAR_STERNHEIMER_C = 5.2146
LAR_STERNHEIMER_X0 = 0.2000
LAR_STERNHEIMER_X1 = 3.0000
LAR_STERNHEIMER_A = 0.19559
LAR_STERNHEIMER_K = 3.0000
# Mean free path of photons before pair conversion: 9/7 X0 (= 18 cm) [PDG-PP sec. 34.4.2].
LAR_PHOTON_CONVERSION_LENGTH = 9.0 / 7.0 * LAR_RADIATION_LENGTH
# Below this energy photons Compton-scatter instead of converting (pair and Compton cross sections
# cross near 10-20 MeV in argon [PDG-PP fig. 34.15]).
LAR_PAIR_COMPTON_CROSSOVER = 10.0e-3  # GeV
PROTON_MASS = 0.93827208816  # GeV [PDG-PP]
MUON_LIFETIME_NS = 2196.9811  # ns, free muon [PDG-PP]
MUON_MINUS_LIFETIME_AR_NS = 537.0  # ns, mu- bound in argon [SUZUKI]
# Fraction of stopped mu- that decay (the rest are captured by the nucleus): tau_Ar / tau_free.
MUON_MINUS_DECAY_FRACTION_AR = MUON_MINUS_LIFETIME_AR_NS / MUON_LIFETIME_NS
CHARGED_PION_LIFETIME_NS = 26.033  # ns [PDG-PP]
PION_DECAY_MUON_KINETIC = 4.12e-3  # GeV, mu+ from pi+ -> mu+ nu at rest (two-body) [PDG-PP]
MICHEL_MAX_ENERGY = 52.83e-3  # GeV, m_mu / 2: end point of the Michel spectrum [PDG-PP]

# --- ProtoDUNE-SP collection plane and readout [PDSP-TDR], [PDSP-PERF] ---------------------------
LARTPC_WIRE_PITCH = 0.479  # cm, collection (X) wires [PDSP-TDR]
LARTPC_N_WIRES = 480  # collection wires of one APA face [PDSP-TDR]
LARTPC_TICK_NS = 500.0  # ns, 2 MHz digitization [PDSP-TDR]
LARTPC_N_TICKS = 6000  # 3 ms readout window [PDSP-TDR]
LARTPC_DRIFT_VELOCITY = 0.16  # cm/us at 500 V/cm [WALKOWIAK]
LARTPC_DRIFT_FIELD = 0.5  # kV/cm [PDSP-TDR]
LARTPC_WIRE_LENGTH = 600.0  # cm, APA height (the coordinate along the wires) [PDSP-TDR]
LARTPC_ADC_MAX = 4095  # 12-bit ADC [PDSP-TDR]
LARTPC_PEDESTAL = 900.0  # ADC, collection baseline [PDSP-PERF]
# Electrons per ADC count at the peak of the shaped pulse: 14 mV/fC (6241.5 e/fC) and a 12-bit
# ADC spanning ~1.8 V (0.44 mV/ADC) [PDSP-TDR] give 6241.5 / 14 * 0.44 = 196 e/ADC.
LARTPC_ELECTRONS_PER_ADC = 196.0
LARTPC_SHAPING_TIME_US = 2.0  # us, peaking time of the cold-electronics shaper [PDSP-TDR]
LARTPC_NOISE_ADC = 2.5  # ADC rms, incoherent noise per channel and tick [PDSP-PERF] (~500 e ENC)
LARTPC_COHERENT_NOISE_ADC = 1.0  # ADC rms, common to a front-end board's wires per tick [PDSP-PERF]
LARTPC_COHERENT_GROUP = 48  # collection wires per front-end board [PDSP-PERF]
# Zero suppression: pixels with ADC - pedestal >= this many total noise sigma are stored; at
# 4 sigma (threshold 11 ADC) a 480 x 6000 plane keeps ~130 pure-noise pixels per event.
LARTPC_ZS_SIGMA = 4.0

# --- charge production and transport [ARGONEUT-R], [MIYAJIMA], [LI-DIFF] -------------------------
LAR_W_ION_EV = 23.6  # eV per ionization electron [MIYAJIMA]
LAR_BOX_ALPHA = 0.93  # modified box model alpha [ARGONEUT-R]
LAR_BOX_BETA = 0.212  # (kV/cm)(g/cm^2)/MeV, modified box model beta [ARGONEUT-R]
LAR_BOX_DENSITY = 1.383  # g/cm^3, density used in the ArgoNeuT fit [ARGONEUT-R]
LAR_DIFFUSION_LONG = 4.0e-9  # cm^2/ns (4.0 cm^2/s) at 500 V/cm [LI-DIFF]
LAR_DIFFUSION_TRANS = 8.8e-9  # cm^2/ns (8.8 cm^2/s) [LI-DIFF]
